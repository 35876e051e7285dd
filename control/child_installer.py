"""CHILD SAs from the IKE core into shared memory: two SA slots per CHILD SA, the SPD bound to the
outbound one, and the hand-over from an older instance to its rekeyed or replacing successor
(make before break: the new outbound SA carries the traffic, the old inbound SA stays a moment for
packets in flight)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from cdefs.sa import Direction
from control.config import ChildSpec, Config
from control.ike.events import ChildSaEstablished, ChildStatus
from control.ike_sa_table import IkeSaTable
from control.log_fields import child_fields
from control.policy_table import PolicyTable
from control.sa_records import INSTALLED, REKEYED, REKEYING, ChildEntry, IkeEntry
from control.sa_text import esp_proposal_name, ts_text
from control.shm import ControlRegion

__all__ = ["ChildInstaller", "InstallerHost", "REKEY_OVERLAP", "REKEY_OVERLAP_MAX", "OUTBOUND_SWITCH_MAX",
           "REPLACE_SETTLE"]

log = logging.getLogger("ipsecgw.daemon")

REKEY_OVERLAP = 10.0            # a replaced CHILD SA's inbound slot stays this long for packets in flight
REKEY_OVERLAP_MAX = 60.0        # ... or, when the core deletes it itself, at most this long
OUTBOUND_SWITCH_MAX = 5.0       # a rekey's responder sends on the new SA at the peer's Delete of the old, or after this
REPLACE_SETTLE = 0.2            # a replacement's responder sends on the new SA this long after installing it


class InstallerHost(Protocol):
    """What the installer needs from the daemon around it: the clock, the wire, the timer."""

    def now(self) -> float: ...

    def send_all(self, entry: IkeEntry) -> None: ...

    def arm(self) -> None: ...

    def maybe_drop_replaced(self, ike_spi: bytes) -> None: ...


def spec_of(config: Config, conn_name: str, name: str) -> ChildSpec | None:
    conn = config.connections.get(conn_name)
    return next((c for c in conn.children if c.name == name), None) if conn is not None else None


class ChildInstaller:
    def __init__(self, host: InstallerHost, config: Config, region: ControlRegion, spd: PolicyTable,
                 ike_sas: IkeSaTable, *, core_timers: bool, rekeyed_inbound_delay: float | None):
        self.host, self.config, self.region, self.spd, self.ike_sas = host, config, region, spd, ike_sas
        self.core_timers = core_timers
        # seconds a rekeyed CHILD SA's inbound half outlives the peer's Delete of it (None: removed at once)
        self.rekeyed_inbound_delay = rekeyed_inbound_delay
        self.children: list[ChildEntry] = []
        self.slot_child: dict[int, ChildEntry] = {}
        self._staged: dict[int, Any] = {}       # inbound SPI -> region handle installed ahead of the send
        self.installed_listeners: list[Callable[[ChildEntry], None]] = []

    # -- queries ------------------------------------------------------------------------------------

    def live(self, conn: str, name: str) -> list[ChildEntry]:
        """The instances of a connection's child that are not yet replaced, oldest first."""
        return self._live((conn, name))

    def _live(self, key: tuple[str, str]) -> list[ChildEntry]:
        return [c for c in self.children if c.key == key and c.state != REKEYED]

    def child_up(self, conn: str, name: str) -> ChildEntry | None:
        return next(iter(self.live(conn, name)), None)

    def of_ike(self, ike_spi: bytes) -> list[ChildEntry]:
        return [c for c in self.children if c.ike_spi == ike_spi]

    def by_spi_in(self, spi_in: int) -> ChildEntry | None:
        return next((c for c in self.children if c.spi_in == spi_in), None)

    def core_status(self, c: ChildEntry) -> str:
        """The IKE core's status of ``c`` (INSTALLED, REKEYING, ...), or "" when the core does not know it."""
        entry = self.ike_sas.get(c.ike_spi)
        st = entry.ike.find_child(spi_in=c.spi_in) if entry is not None else None
        return st.status.name if st is not None else ""

    def carries(self, c: ChildEntry) -> bool:
        """Whether the SPD sends ``c``'s traffic on ``c``'s outbound SA."""
        return c.slot_out >= 0 and c in self.children and self.spd.bound.get(c.key) == (c.slot_out,)

    # -- installing ------------------------------------------------------------------------------------

    def _apply_lifetimes(self, conn_name: str, ev: ChildSaEstablished) -> None:
        spec = spec_of(self.config, conn_name, ev.name)
        if spec is not None:
            for sa in (ev.inbound, ev.outbound):
                lt = sa.lifetime
                lt.soft_bytes, lt.hard_bytes = spec.rekey_bytes, spec.life_bytes
                lt.soft_packets, lt.hard_packets = spec.rekey_packets, spec.life_packets
                lt.soft_seconds, lt.hard_seconds = spec.rekey_time, spec.hard_seconds

    def stage_inbound(self, entry: IkeEntry, ev: ChildSaEstablished) -> None:
        """Install the inbound half ahead of the datagram that lets the peer send on it."""
        self._apply_lifetimes(entry.conn.name, ev)
        self._staged[ev.inbound.spi] = self.region.install_sa(ev.inbound, Direction.IN)

    def unstage(self, spis: list[int]) -> None:
        """Inbound halves staged for events that never got installed (the handler failed) go again."""
        for spi in spis:
            h = self._staged.pop(spi, None)
            if h is not None:
                self.region.delete_sa(h.slot)

    def install(self, entry: IkeEntry, ev: ChildSaEstablished) -> ChildEntry:
        spec = spec_of(self.config, entry.conn.name, ev.name)
        inbound, outbound = ev.inbound, ev.outbound
        h_in = self._staged.pop(inbound.spi, None)
        if h_in is None:
            self._apply_lifetimes(entry.conn.name, ev)
            h_in = self.region.install_sa(inbound, Direction.IN)
        try:
            h_out = self.region.install_sa(outbound, Direction.OUT)
        except BaseException:
            self.region.delete_sa(h_in.slot)
            raise
        now = self.host.now()
        rekey_at = expire_at = None
        if spec is not None and spec.rekey_time and not self.core_timers:
            rekey_at = now + spec.rekey_time * random.uniform(0.9, 1.0)     # jitter: both ends won't collide
        if spec is not None and spec.hard_seconds:
            expire_at = now + spec.hard_seconds
        suite = ev.suite
        child = ChildEntry(entry.conn.name, ev.name, entry.spi, inbound.spi, outbound.spi, h_in.slot, h_out.slot,
                           h_in.sa_id, h_out.sa_id, esp_proposal_name(suite) if suite else outbound.enc,
                           str(outbound.mode), outbound.udp_encap, list(ev.local_ts), list(ev.remote_ts),
                           time.time(), now, rekey_at, expire_at)
        if spec is not None and spec.remote_dynamic and entry.ike.remote_identity is not None:
            child.peer = str(entry.ike.remote_identity)
        if self.config.gateway.export_keys:
            child.keys = (inbound, outbound)
        # the older instance(s) of this child (a rekey or a replacement): outbound moves to the new SA now,
        # their inbound SAs stay a moment for packets already in flight
        if ev.rekey_of is not None:
            olds = [c for c in self.children if c.spi_in == ev.rekey_of and c.state != REKEYED]
        else:
            olds = self._live(child.key)
        self.children.append(child)
        self.slot_child[h_in.slot] = child
        self.slot_child[h_out.slot] = child
        # a rekey we answered: the initiator may not have our response yet, so ESP on the new outbound SA could
        # reach it before it can decrypt; like strongSwan, keep sending on the old pair until the initiator
        # deletes it (RFC 7296 2.8 has the initiator delete it right after the exchange)
        answered = ev.rekey_of is not None and not ev.initiator
        wait = answered and any(self.carries(o) for o in olds)
        # in a rekey collision (RFC 7296 2.8.1) our own rekey may have replaced the old pair already: the
        # pair we answered stands by, and carries the traffic only if ours turns out to be the redundant one;
        # our own pair, when it is the redundant one, never carries it (we delete it next)
        reserve = ev.redundant or (
            answered and not wait and any(self.carries(c) for c in self.children if c is not child))
        # a replacement we answered (a reauthentication's IKE_AUTH, or a peer whose control restarted and
        # renegotiates its adopted SAs): the same race, but the peer may hold no IKE SA to delete the old
        # pair with, so its install only gets a moment
        settle = not reserve and ev.rekey_of is None and not ev.initiator and any(self.carries(o) for o in olds)
        log.info("CHILD SA %s{%s} installed: %s, SPIs in 0x%08x out 0x%08x, %s %s === %s%s%s", child.name,
                 entry.label, child.proposal, child.spi_in, child.spi_out, child.mode,
                 ", ".join(ts_text(t) for t in child.local_ts), ", ".join(ts_text(t) for t in child.remote_ts),
                 ", ESP in UDP" if child.encap else "",
                 ", sending on it once the peer deletes the SA it replaces" if wait else
                 ", sending on it in a moment (the peer is installing it)" if settle else
                 ", redundant after a rekey collision" if ev.redundant else
                 ", standing by (a rekey collision)" if reserve else "", extra=child_fields(child, entry))
        if wait:
            child.waits_for, child.switch_at, child.expects_delete = olds, now + OUTBOUND_SWITCH_MAX, True
        elif settle:
            child.waits_for, child.switch_at = olds, now + REPLACE_SETTLE
        elif not reserve:
            self.take_over(child, olds, now)
        for listener in self.installed_listeners:
            listener(child)
        return child

    # -- hand-over -----------------------------------------------------------------------------------------

    def take_over(self, child: ChildEntry, olds: list[ChildEntry], now: float) -> None:
        """Outbound traffic moves to ``child``; the instances it replaces are retired."""
        child.waits_for, child.switch_at = [], None
        self.spd.set_protect(child.key, child.local_ts, child.remote_ts, child.slot_out)
        for old in olds:
            if old not in self.children or old.state == REKEYED:
                continue
            log.info("CHILD SA %s of %s rekeyed: SPIs in 0x%08x out 0x%08x replace in 0x%08x out 0x%08x", child.name,
                     child.conn, child.spi_in, child.spi_out, old.spi_in, old.spi_out,
                     extra=child_fields(child, self.ike_sas.get(child.ike_spi)))
            self._retire(old, now)

    def release_waiting(self, old: ChildEntry, now: float, why: str) -> None:
        """``old`` is going: a newer instance that waited for that sends from now on (unless another
        instance took the traffic over meanwhile, as our own rekey in a collision)."""
        for child in [c for c in self.children if old in c.waits_for]:
            self.end_wait(child, now, why)

    def end_wait(self, child: ChildEntry, now: float, why: str) -> bool:
        """Stop waiting; True when the traffic moved to ``child`` (an instance it waited for still carried it)."""
        if any(self.carries(o) for o in child.waits_for):
            log.debug("CHILD SA %s of %s: outbound moves to 0x%08x (%s)", child.name, child.conn, child.spi_out,
                      why, extra=child_fields(child))
            self.take_over(child, child.waits_for, now)
            return True
        child.waits_for, child.switch_at = [], None
        return False

    def _retire(self, old: ChildEntry, now: float) -> None:
        """A newer instance took over: both of the old slots go when the old pair is removed (``remove``)."""
        old.state = REKEYED
        entry = self.ike_sas.get(old.ike_spi)
        # the core deletes the old pair itself (ChildSaDeleted); the timer is a safety net
        old.remove_at = now + (REKEY_OVERLAP_MAX if entry is not None else REKEY_OVERLAP)
        old.rekey_at = old.expire_at = None
        # the outbound slot stays too: the fastpath may hold a batch already classified onto it when the SPD
        # moves to the new SA, and freeing the slot under it dropped those packets (engine-drop: 4 datagrams at
        # 3 of 245 rekeys in a 30-minute soak, docs/soak.md); no new packet is sent on it once the SPD moved
        old.keys = None
        # (a core that rekeys CHILD SAs deletes the old one itself as part of the exchange)
        self.host.maybe_drop_replaced(old.ike_spi)
        self.host.arm()

    def rekey_refused(self, entry: IkeEntry) -> None:
        """A rekey the peer refused leaves the old pair in service: it can be rekeyed again (the next soft
        limit, timer or operator), instead of waiting for its hard expiry as REKEYING."""
        for c in self.children:
            if c.ike_spi == entry.spi and c.state == REKEYING and self.core_status(c) == ChildStatus.INSTALLED.name:
                c.state = INSTALLED

    def peer_deleted(self, spi_in: int, reason: str, now: float) -> None:
        child = self.by_spi_in(spi_in)
        if child is None:
            return
        self.release_waiting(child, now, "the peer deleted the old SA")
        if child.state == REKEYED and self.rekeyed_inbound_delay is not None:
            # the outbound half is gone already; the inbound half serves packets still in flight
            child.remove_at = min(child.remove_at or float("inf"), now + self.rekeyed_inbound_delay)
        else:
            self.remove(child, reason=reason)

    def reconcile(self, entry: IkeEntry) -> None:
        """The core is the truth about which SAs exist: drop what it no longer has."""
        spis = {c.spi_in for c in entry.ike.children}
        for child in [c for c in self.children if c.ike_spi == entry.spi and c.state != REKEYED]:
            if child.spi_in not in spis:
                self.remove(child, reason="deleted by the IKE SA")

    # -- removing -------------------------------------------------------------------------------------------

    def remove(self, child: ChildEntry, reason: str, keep_trap: bool = True) -> None:
        """Delete both SAs of a CHILD SA (keys zeroed in the region) and fix up its policies."""
        if child not in self.children:
            return
        now = self.host.now()
        self.release_waiting(child, now, reason)
        carried = self.carries(child)
        self.children.remove(child)
        key = child.key
        heirs = self._live(key)
        if carried and heirs:
            # it carried the outbound traffic while a sibling lives on (e.g. after a rekey collision the
            # redundant pair is deleted): move the traffic before its slot is freed, never leave the SPD
            # pointing at a deleted SA
            heir = next((c for c in reversed(heirs) if not c.waits_for), heirs[-1])
            self.take_over(heir, heir.waits_for, now)
        for slot in (child.slot_in, child.slot_out):
            if slot >= 0 and self.slot_child.get(slot) is child:
                del self.slot_child[slot]
                try:
                    self.region.delete_sa(slot)
                except KeyError:
                    pass            # already deleted (e.g. by the fastpath's hard expiry handling)
        child.keys = None
        if child.state != REKEYED:
            log.info("CHILD SA %s of %s removed (%s): SPIs in 0x%08x out 0x%08x", child.name, child.conn, reason,
                     child.spi_in, child.spi_out, extra=child_fields(child, self.ike_sas.get(child.ike_spi)))
            if not heirs:
                spec = spec_of(self.config, child.conn, child.name)
                if keep_trap and spec is not None and spec.start_action == "trap":
                    self.spd.set_trap(key, spec.local_ts, spec.remote_ts)
                else:
                    self.spd.drop(key)
