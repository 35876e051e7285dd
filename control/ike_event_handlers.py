"""What the daemon does about each event of the IKE core, dispatched by the event's type."""

from __future__ import annotations

import logging
import random
import time
from functools import singledispatchmethod
from typing import Protocol

from control.child_installer import ChildInstaller
from control.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaReauthenticated,
    IkeSaReauthStarted,
    IkeSaRekeyed,
)
from control.ike.sa import IkeSA
from control.ike_sa_table import IkeSaTable
from control.log_fields import ike_fields
from control.pools import Pools
from control.responder_gate import AdmissionGate
from control.sa_records import IkeEntry
from control.sa_text import ike_proposal_name, notify_text

__all__ = ["IkeEventHandlers", "EventHost"]

log = logging.getLogger("ipsecgw.daemon")


class EventHost(Protocol):
    """The daemon, as the handlers need it: the clock, and driving an IKE SA after a change."""

    def now(self) -> float: ...

    def process(self, entry: IkeEntry) -> None: ...

    def maybe_drop_replaced(self, ike_spi: bytes) -> None: ...


class IkeEventHandlers:
    def __init__(self, host: EventHost, ike_sas: IkeSaTable, installer: ChildInstaller, gate: AdmissionGate, *,
                 core_timers: bool, pools: Pools | None = None):
        self.host, self.ike_sas, self.installer, self.gate = host, ike_sas, installer, gate
        self.pools = pools
        self.core_timers = core_timers

    @singledispatchmethod
    def handle(self, ev: object, entry: IkeEntry) -> None:
        log.info("IKE SA %s: %s", entry.label, ev.__class__.__name__, extra=ike_fields(entry))

    @handle.register
    def _(self, ev: IkeSaEstablished, entry: IkeEntry) -> None:
        now = self.host.now()
        entry.established = ev
        entry.established_wall = time.time()
        self.gate.closed(entry.spi)
        if not self.core_timers:
            if entry.conn.rekey_time:
                entry.rekey_at = now + entry.conn.rekey_time * random.uniform(0.9, 1.0)
            if entry.conn.dpd_delay:
                entry.dpd_at = now + entry.conn.dpd_delay
        log.info("IKE SA %s established with %s (%s), %s, local id %s, %s%s%s", entry.label,
                 ev.remote[0], ev.remote_id, ike_proposal_name(ev.suite), ev.local_id,
                 "we initiated" if ev.initiator else "peer initiated",
                 ", NAT-T (UDP 4500)" if ev.nat_local or ev.nat_remote else "",
                 ", IKE fragmentation (RFC 7383)" if entry.ike.peer_fragmentation else "", extra=ike_fields(entry))
        if ev.vips:
            log.info("IKE SA %s: virtual IP %s %s %s", entry.label, ", ".join(map(str, ev.vips)),
                     "assigned to us by" if ev.initiator else "leased to", ev.remote_id, extra=ike_fields(entry))
        while entry.pending:
            entry.ike.create_child(now, entry.pending.pop(0).child_config())
        if not ev.initiator:
            # like strongSwan's uniqueids: a peer that connects again replaces its older IKE SA
            for old in self.ike_sas:
                if old is not entry and old.conn is entry.conn and old.established is not None \
                        and str(old.established.remote_id) == str(ev.remote_id) and entry.replaces is None:
                    entry.replaces = old.spi
                    self.host.maybe_drop_replaced(old.spi)

    @handle.register
    def _(self, ev: ChildSaEstablished, entry: IkeEntry) -> None:
        self.installer.install(entry, ev)

    @handle.register
    def _(self, ev: ChildSaDeleted, entry: IkeEntry) -> None:
        self.installer.peer_deleted(ev.spi_in, str(ev.reason), self.host.now())

    @handle.register
    def _(self, ev: IkeSaReauthStarted, entry: IkeEntry) -> None:
        # make before break: route and drive the new IKE SA; the children move to it as its CHILD SAs
        # come up (``rekey_of``), and the core deletes the old IKE SA after that
        n = self.ike_sas.add(entry.conn, ev.new_sa, entry.local_ip, self.host.now())
        log.info("IKE SA %s reached its reauth time: reauthenticating as %s (make before break)",
                 entry.label, n.label, extra=ike_fields(entry))
        self.host.process(n)

    @handle.register
    def _(self, ev: IkeSaReauthenticated, entry: IkeEntry) -> None:
        old = self.ike_sas.get(ev.old_sa.our_spi)
        log.info("IKE SA %s reauthenticated: it replaces %s, which is being deleted", entry.label,
                 old.label if old is not None else "the old IKE SA", extra=ike_fields(entry))
        if old is not None:
            self.host.process(old)      # send its Delete

    @handle.register
    def _(self, ev: IkeSaRekeyed, entry: IkeEntry) -> None:
        # the core replaced this IKE SA by ``ev.new_sa``: route its SPI, move the children to it
        new: IkeSA = ev.new_sa
        n = self.ike_sas.add(entry.conn, new, entry.local_ip, self.host.now())
        old_est = entry.established
        if old_est is not None and new.suite is not None:
            n.established = IkeSaEstablished(new.spi_i, new.spi_r, new.initiator, new.suite, old_est.local_id,
                                             old_est.remote_id, new.remote, new.nat_local, new.nat_remote,
                                             tuple(new.vips))
            n.established_wall = time.time()
        if ev.redundant:
            log.info("IKE SA %s: simultaneous rekey, the duplicate %s will be deleted", entry.label, n.label,
                     extra=ike_fields(entry))
        else:
            for c in self.installer.children:
                if c.ike_spi == entry.spi:
                    c.ike_spi = n.spi
            if self.pools is not None:
                self.pools.transfer(entry.spi, n.spi)
            log.info("IKE SA %s rekeyed: now %s, SPIs %s_i %s_r, %s", entry.label, n.label,
                     new.spi_i.hex(), new.spi_r.hex(), ike_proposal_name(new.suite) if new.suite else "",
                     extra=ike_fields(n))
        self.host.process(n)

    @handle.register
    def _(self, ev: IkeSaDeleted, entry: IkeEntry) -> None:
        if not ev.rekeyed:
            log.info("IKE SA %s with %s deleted: %s", entry.label, entry.ike.remote[0], ev.reason,
                     extra=ike_fields(entry))

    @handle.register
    def _(self, ev: ChildSaFailed, entry: IkeEntry) -> None:
        log.warning("CHILD SA %s of %s failed: %s%s (%s)%s", ev.name or "?", entry.label, notify_text(ev.notify),
                    _sender(ev.notify, ev.received, entry), ev.reason, _detail(ev.detail),
                    extra={**ike_fields(entry), "child": ev.name or None})
        self.installer.rekey_refused(entry)

    @handle.register
    def _(self, ev: IkeSaFailed, entry: IkeEntry) -> None:
        log.warning("IKE SA %s with %s failed: %s%s (%s)%s", entry.label, entry.ike.remote[0],
                    notify_text(ev.notify), _sender(ev.notify, ev.received, entry), ev.reason, _detail(ev.detail),
                    extra=ike_fields(entry))


def _sender(notify: int, received: bool, entry: IkeEntry) -> str:
    if received:
        return " from the peer"
    return " sent to the peer" if notify and not entry.ike.initiator else ""


def _detail(lines: tuple[str, ...]) -> str:
    # the explanation (control.ike.explain) as indented lines under the one that names the failure
    return "".join(f"\n    {line}" for line in lines)
