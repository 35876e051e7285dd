"""The daemon's own timers over its IKE and CHILD SAs: rekeys and DPD when the core does not keep them,
CHILD SA lifetimes, and the moment a rekeyed CHILD SA takes the outbound traffic.  The half-open timeout is
the core's (``IkeSA.handle_timer`` ends a responder SA without IKE_AUTH after ``half_open_timeout``, and
the daemon drops the dead entry): one owner, for the daemon and ``IkeUdpEndpoint`` alike."""

from __future__ import annotations

import logging
from typing import Protocol

from control.child_installer import OUTBOUND_SWITCH_MAX, ChildInstaller
from control.ike_sa_table import IkeSaTable
from control.log_fields import child_fields
from control.sa_records import REKEYING, ChildEntry, IkeEntry

__all__ = ["deadlines", "run_due", "TimerHost"]

log = logging.getLogger("ipsecgw.daemon")


class TimerHost(Protocol):
    """What a due timer makes the daemon do."""

    def process(self, entry: IkeEntry) -> None: ...

    def drop_entry(self, entry: IkeEntry, reason: str) -> None: ...

    def rekey_ike(self, entry: IkeEntry, why: str) -> None: ...

    def rekey_child(self, child: ChildEntry, why: str) -> None: ...

    def delete_child(self, child: ChildEntry, now: float, why: str) -> None: ...


def deadlines(ike_sas: IkeSaTable, children: list[ChildEntry]) -> list[float]:
    """Every moment something is due; the daemon wakes at the earliest."""
    out = []
    for e in ike_sas:
        t = e.ike.get_timer()
        if t is not None:
            out.append(t)
        for t in (e.rekey_at, e.dpd_at):
            if t is not None:
                out.append(t)
    for c in children:
        out += [t for t in (c.rekey_at, c.expire_at, c.remove_at, c.switch_at) if t is not None]
    return out


def run_due(host: TimerHost, ike_sas: IkeSaTable, installer: ChildInstaller, now: float) -> None:
    """Act on everything due by ``now``: the core's timers (half-open expiry among them), rekeys, DPD, CHILD
    SA hand-overs."""
    for entry in ike_sas:
        if entry.spi not in ike_sas:
            continue
        t = entry.ike.get_timer()
        if t is not None and t <= now:
            entry.ike.handle_timer(now)
            host.process(entry)
        if entry.spi not in ike_sas:
            continue
        if entry.rekey_at is not None and now >= entry.rekey_at:
            host.rekey_ike(entry, "rekey_time")
        if entry.dpd_at is not None and now >= entry.dpd_at:
            entry.dpd_at = now + entry.conn.dpd_delay
            entry.ike.dpd(now)
            host.process(entry)
    for child in list(installer.children):
        if child not in installer.children:
            continue            # removed while an earlier one was handled
        if child.switch_at is not None and now >= child.switch_at:
            if any(installer.core_status(o) == REKEYING for o in child.waits_for):
                child.switch_at = now + OUTBOUND_SWITCH_MAX     # a rekey collision: our own exchange settles it
            elif installer.end_wait(child, now, "timeout") and child.expects_delete:
                log.warning("CHILD SA %s of %s: the peer did not delete the SA it rekeyed within %.0f s; "
                            "sending on SPI 0x%08x anyway", child.name, child.conn, OUTBOUND_SWITCH_MAX,
                            child.spi_out, extra=child_fields(child))
        if child.remove_at is not None and now >= child.remove_at:
            installer.remove(child, reason="replaced")
        elif child.expire_at is not None and now >= child.expire_at:
            host.delete_child(child, now, "life_time reached")
        elif child.rekey_at is not None and now >= child.rekey_at:
            host.rekey_child(child, "rekey_time")
