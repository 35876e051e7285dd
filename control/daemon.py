"""The IKE control daemon: one asyncio process around the sans-IO IKE core.

It binds UDP on the IKE and NAT-T ports of every local address the
configuration names, creates responder ``IkeSA`` objects for new IKE_SA_INIT
requests, initiates connections (start_action=start, ACQUIREs, the operator),
drives retransmission and lifetime timers, and writes what the core negotiates
into the shared-memory region: two SA slots per CHILD SA and outbound SPD
policies bound to the outbound slot.  It drains the fastpath's event ring:
ACQUIRE starts a negotiation, SOFT_EXPIRE a rekey, HARD_EXPIRE/SEQ_EXHAUSTED a
delete.  ``ipsecgw list-sas`` and friends talk to it over ``control.ctl``.

The core grows exchanges (CREATE_CHILD_SA, INFORMATIONAL) separately.  The
daemon uses them when the ``IkeSA`` has them (see ``_CoreOps``) and otherwise
falls back: a rekey becomes a make-before-break replacement of the IKE SA, a
delete is local only.  Events it does not know are logged, and any event
carrying ``inbound``/``outbound`` SAs is installed like ``ChildSaEstablished``.

Logs say what an operator needs (who, which proposal, why it failed), never keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from cdefs.sa import SA, Direction
from control.config import ChildSpec, Config, ConnectionConfig, core_schedules_rekeys
from control.ctl import ControlError, ControlServer
from control.daemon_commands import DaemonCommands
from control.host_addrs import local_addresses, route_source
from control.ike.constants import NATT_KEEPALIVE, NON_ESP_MARKER, ExchangeType
from control.ike.events import (
    ChildSaEstablished,
    ChildSaFailed,
    Datagram,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaReauthenticated,
    IkeSaReauthStarted,
    State,
)
from control.ike.message import TrafficSelectorEntry
from control.ike.sa import IkeSA
from control.sa_text import esp_proposal_name, ike_proposal_name, notify_text, ts_text
from control.shm import ControlRegion, Policy, RegionError
from control.ts_policies import policies_for
from control.wireshark_keys import wireshark_tables

__all__ = ["Daemon", "run_daemon", "ike_proposal_name", "esp_proposal_name", "wireshark_tables"]

log = logging.getLogger("ipsecgw.daemon")

_policies_for = policies_for    # the old private name, still imported by control/gateway.py

HALF_OPEN_TIMEOUT = 30.0        # responder SAs that never finish IKE_AUTH are dropped after this
HALF_OPEN_MAX = 1024            # beyond this, new IKE_SA_INIT requests are dropped (cookies: core's job)
REKEY_OVERLAP = 10.0            # a replaced CHILD SA's inbound slot stays this long for packets in flight
REKEY_OVERLAP_MAX = 60.0        # ... or, when the core deletes it itself, at most this long
OUTBOUND_SWITCH_MAX = 5.0       # a rekey's responder sends on the new SA at the peer's Delete of the old, or after this
REPLACE_SETTLE = 0.2            # a replacement's responder sends on the new SA this long after installing it
EVENT_POLL = 0.05               # seconds between event ring drains
PRIO_INSTALLED = 10_000         # SPD priorities (lower wins): negotiated policies beat trap policies
PRIO_TRAP = 20_000


# -- the optional parts of the core's API -------------------------------------------------------

class _CoreOps:
    """What this IkeSA can do beyond IKE_SA_INIT/IKE_AUTH; None where the core has nothing yet.

    Signatures (the core's CREATE_CHILD_SA/INFORMATIONAL tasks):
    ``create_child(now, child_config)``, ``rekey_child(now, spi_in)``, ``delete_child(now, spi_in)``,
    ``rekey_ike(now)``, ``delete(now)`` (IKE SA), ``dpd(now)`` (liveness check).
    """

    NAMES = ("create_child", "rekey_child", "delete_child", "rekey_ike", "delete", "dpd")

    def __init__(self, ike: IkeSA):
        for n in self.NAMES:
            setattr(self, n, getattr(ike, n, None))


# -- runtime records ------------------------------------------------------------------------------

@dataclass(eq=False)            # identity: two records are never "the same" SA
class ChildEntry:
    conn: str
    name: str
    ike_spi: bytes
    spi_in: int
    spi_out: int
    slot_in: int
    slot_out: int
    id_in: int
    id_out: int
    proposal: str
    mode: str
    encap: bool
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]
    installed_wall: float
    installed: float
    rekey_at: float | None
    expire_at: float | None
    state: str = "INSTALLED"            # INSTALLED | REKEYING | REKEYED (outbound replaced, inbound kept)
    remove_at: float | None = None      # REKEYED: inbound slot removal time
    # a rekey's responder keeps sending on the older instances until the initiator deletes them: until then
    # they are listed here and the SPD still points at their outbound slot
    waits_for: list[ChildEntry] = field(default_factory=list, repr=False)
    switch_at: float | None = None      # ... and sends on this one at the latest then
    expects_delete: bool = False        # ... waiting for a rekey initiator's Delete (not a short settle)
    keys: tuple[SA, SA] | None = field(default=None, repr=False)   # only with gateway.export_keys


@dataclass
class IkeEntry:
    conn: ConnectionConfig
    ike: IkeSA
    created: float
    local_ip: str
    ops: _CoreOps
    established: IkeSaEstablished | None = None
    established_wall: float = 0.0
    rekey_at: float | None = None
    dpd_at: float | None = None
    pending: list[ChildSpec] = field(default_factory=list)     # children to create once up
    replaces: bytes | None = None                               # IKE SA this one is replacing
    unique: int = 0

    @property
    def spi(self) -> bytes:
        return self.ike.our_spi


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, daemon: Daemon, local_ip: str, port: int):
        self.daemon, self.local_ip, self.port = daemon, local_ip, port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.daemon._received(data, self.local_ip, self.port, (addr[0], addr[1]))
        except Exception:           # noqa: BLE001 - one bad datagram must never end the daemon
            log.exception("internal error handling a datagram from %s", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error on %s:%d: %s", self.local_ip, self.port, exc)


def _installs(ev: object) -> bool:
    """Whether ``ev`` hands us a CHILD SA pair to install."""
    return isinstance(ev, ChildSaEstablished) or (hasattr(ev, "inbound") and hasattr(ev, "outbound")
                                                  and isinstance(ev.inbound, SA))


class Daemon(DaemonCommands):
    """The control process.  ``await start()``, then ``await serve()`` until ``stop()``."""

    # seconds a rekeyed CHILD SA's inbound half outlives the peer's Delete of it (None: removed at once)
    rekeyed_inbound_delay: float | None = None

    def __init__(self, config: Config, *, control_only: bool = True):
        self.config = config
        self.gw = config.gateway
        self.control_only = control_only
        self.region: ControlRegion | None = None
        self.ike_sas: dict[bytes, IkeEntry] = {}
        self.half_open: dict[tuple[bytes, str], bytes] = {}
        self.children: list[ChildEntry] = []
        self.slot_child: dict[int, ChildEntry] = {}
        self._staged: dict[int, Any] = {}       # inbound SPI -> region handle installed ahead of the send
        # SPD: per (connection, child) the policy indices and what they cover
        self.policies: dict[tuple[str, str], list[int]] = {}
        self.policy_sel: dict[tuple[str, str], list[Policy]] = {}
        self.policy_sas: dict[tuple[str, str], tuple[int, ...]] = {}     # ... and the SA slots they point at
        self.policy_key: dict[int, tuple[str, str]] = {}
        self.stats: dict[str, int] = {}
        self._socks: dict[tuple[str, int], _Proto] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._ctl: ControlServer | None = None
        self._unique = 0
        self.started_wall = time.time()
        # the core keeps rekey and DPD timers itself when its configs carry them; else the daemon does
        self.core_timers = core_schedules_rekeys()

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open_region()
        await self._open_sockets()
        self._ctl = ControlServer(self.gw.control_socket, self.control_handlers())
        await self._ctl.start()
        self._install_traps()
        self._tasks.append(asyncio.create_task(self._poll_events()))
        for conn in self.config.connections.values():
            starts = [c for c in conn.children if c.start_action == "start"]
            if starts:
                self.initiate(conn, starts[0], starts[1:])
        log.info("ipsecgw control started: %d connection(s), IKE on %s ports %d/%d, shm %s, control socket %s%s",
                 len(self.config.connections), ", ".join(sorted({ip for ip, _ in self._socks})), self.gw.ike_port,
                 self.gw.natt_port, self.gw.shm_path, self.gw.control_socket,
                 " (control only: no fastpath attached)" if self.control_only else "")

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        log.info("shutting down: deleting %d IKE SA(s) and %d CHILD SA(s)", len(self.ike_sas), len(self.children))
        for t in self._tasks:
            t.cancel()
        now = self._now()
        for entry in list(self.ike_sas.values()):
            if entry.established is not None and entry.ops.delete is not None:
                try:
                    entry.ops.delete(now)
                    self._send_all(entry)
                except Exception:      # noqa: BLE001 - shutting down regardless
                    log.exception("IKE SA delete failed")
        for child in list(self.children):
            self._remove_child(child, reason="shutdown", keep_trap=False)
        if self.region is not None:
            for key in list(self.policies):
                self._drop_policies(key)
            self.region.commit_policies()
        if self._timer:
            self._timer.cancel()
        await asyncio.sleep(0)          # let the delete datagrams leave
        for p in self._socks.values():
            if p.transport:
                p.transport.close()
        if self._ctl is not None:
            await self._ctl.close()
        if self.region is not None:
            self.region.close()
            self.region = None
        self.ike_sas.clear()
        log.info("stopped")

    def _open_region(self) -> None:
        path = self.gw.shm_path
        if os.path.exists(path):
            region = ControlRegion.attach(path)
            rec = region.reconcile()
            # Our IKE state died with the previous process, so its SAs cannot be rekeyed or deleted
            # properly: remove them (keys zeroed) and renegotiate from the configuration.
            for slot in rec.sas:
                region.delete_sa(slot)
            for index in rec.policies:
                region.delete_policy(index, commit=False)
            region.commit_policies()
            log.info("attached to existing region %s: removed %d SA(s) and %d policy(ies) left by a previous "
                     "control process%s", path, len(rec.sas), len(rec.policies),
                     f", repaired {rec.repaired} torn record(s)" if rec.repaired else "")
            self.region = region
        else:
            self.region = ControlRegion.create(path, self.gw.capacities)
            c = self.gw.capacities
            log.info("created region %s (%d SA slots, %d policies)", path, c.n_sa, c.n_spd)

    async def _open_sockets(self) -> None:
        await self._listen(sorted({a for c in self.config.connections.values() for a in c.local_addrs}),
                           RegionError)

    async def _listen(self, ips: list[str], error: type[Exception]) -> None:
        """Bind the IKE and NAT-T ports on each of ips; a bind failure raises error.  ``%any`` stands for
        every address the host has now (one socket each, so a datagram's local address is known)."""
        assert self._loop is not None
        if "%any" in ips:
            found = local_addresses()
            log.info("local_addrs %%any: IKE on %s", ", ".join(found) or "no address found")
            ips = sorted({i for i in ips if i != "%any"} | {i for i in found if (i, self.gw.ike_port)
                                                              not in self._socks})
        for ip in ips:
            for port in (self.gw.ike_port, self.gw.natt_port):
                try:
                    # NAT-T port: SO_REUSEPORT so the fastpath can join the port and steer ESP-in-UDP to
                    # itself with a reuseport BPF program (fastpath/io/sockets.py); IKE still comes here
                    _, proto = await self._loop.create_datagram_endpoint(
                        lambda ip=ip, port=port: _Proto(self, ip, port), local_addr=(ip, port),
                        reuse_port=port == self.gw.natt_port)
                except OSError as exc:
                    raise error(f"cannot listen on UDP {ip} port {port}: {exc.strerror}") from None
                self._socks[(ip, port)] = proto

    # -- datagrams ------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _received(self, data: bytes, local_ip: str, port: int, remote: tuple[str, int]) -> None:
        natt = port == self.gw.natt_port
        if natt and not data.startswith(NON_ESP_MARKER):
            # ESP-in-UDP is the fastpath's business; a NAT-T keepalive (RFC 3948 §2.3) is only counted
            self._count("natt_keepalive" if data == NATT_KEEPALIVE else "natt_non_ike")
            return
        msg = data[4:] if natt else data
        if len(msg) < 28:
            self._count("short_datagrams")
            return
        spi_i, spi_r, exchange, flags = msg[:8], msg[8:16], msg[18], msg[19]
        from_initiator = bool(flags & 0x08)
        entry = self.ike_sas.get(spi_r if from_initiator else spi_i)
        if entry is None and from_initiator and spi_r == bytes(8) and not flags & 0x20 \
                and exchange == ExchangeType.IKE_SA_INIT:
            entry = self._responder_for(spi_i, local_ip, port, remote)
        if entry is None:
            self._count("unknown_spi")
            return
        entry.ike.receive_datagram(data, port, remote, self._now())
        self._process(entry)

    def _responder_for(self, spi_i: bytes, local_ip: str, port: int, remote: tuple[str, int]) -> IkeEntry | None:
        key = (spi_i, remote[0])
        known = self.half_open.get(key)
        if known is not None and known in self.ike_sas:
            return self.ike_sas[known]
        conn = next((c for c in self.config.connections.values()
                     if (local_ip in c.local_addrs or c.any_local)
                     and (remote[0] in c.remote_addrs or "%any" in c.remote_addrs)), None)
        if conn is None:
            self._count("no_connection")
            log.info("IKE_SA_INIT from %s to %s: no connection configured for this peer, ignored", remote[0],
                     local_ip)
            return None
        if len(self.half_open) >= HALF_OPEN_MAX:
            self._count("half_open_full")
            return None
        ike = IkeSA(conn.ike_config(self.gw, local_ip=local_ip), initiator=False, local=(local_ip, port),
                    remote=remote)
        entry = self._add_entry(conn, ike, local_ip)
        self.half_open[key] = entry.spi
        return entry

    def _add_entry(self, conn: ConnectionConfig, ike: IkeSA, local_ip: str) -> IkeEntry:
        self._unique += 1
        entry = IkeEntry(conn, ike, self._now(), local_ip, _CoreOps(ike), unique=self._unique)
        self.ike_sas[entry.spi] = entry
        return entry

    def _send_all(self, entry: IkeEntry) -> None:
        for d in entry.ike.datagrams_to_send():
            self._send(entry.local_ip, d)

    def _send(self, local_ip: str, d: Datagram) -> None:
        p = self._socks.get((local_ip, d.local_port))
        if p is None or p.transport is None:
            log.warning("no socket on %s port %d to send an IKE message from", local_ip, d.local_port)
            return
        p.transport.sendto(d.data, d.remote)

    # -- driving the core ------------------------------------------------------------------------------

    def _process(self, entry: IkeEntry) -> None:
        """Send what the core queued, act on its events, notice a dead SA; then re-arm the timer.

        New CHILD SAs go into shared memory *before* the send.  A rekey we initiated is installed whole:
        the peer has it already, and our outbound traffic should move to it before our Delete of the pair
        it replaces tells the peer to drop that.  One we answered gets its inbound half: the response among
        these datagrams lets the peer send on it at once, and on a loaded host its ESP beat a later
        install (counted no-sa drops at a rekey).  Everything else waits until after the send, in event
        order: acting on all events first put e.g. the Delete of a replaced IKE SA ahead of the IKE_AUTH
        response that made the replacement, and the peer lost its make-before-break."""
        events = []
        while (ev := entry.ike.next_event()) is not None:
            events.append(ev)
        done: set[int] = set()
        staged: dict[int, RegionError] = {}
        mine: list[int] = []            # inbound SPIs this call staged (a nested call has its own)
        for ev in events:
            if not _installs(ev):
                continue
            if getattr(ev, "initiator", False):
                if getattr(ev, "rekey_of", None) is not None:      # our Delete of what it replaces is queued
                    self._act(entry, ev, None)
                    done.add(id(ev))
                continue                # a new one: the peer has it, and it takes its turn after the send
            try:
                self._stage_inbound(entry, ev)
                mine.append(ev.inbound.spi)
            except RegionError as exc:
                staged[id(ev)] = exc
        self._send_all(entry)
        for ev in events:
            if id(ev) not in done:
                self._act(entry, ev, staged.get(id(ev)))
        while (ev := entry.ike.next_event()) is not None:      # raised while acting on the others
            self._act(entry, ev, None)
        self._unstage(mine)
        self._send_all(entry)           # events may have queued requests (create_child...)
        self._reconcile_entry(entry)
        self._arm()

    def _act(self, entry: IkeEntry, ev: object, staging_failed: RegionError | None) -> None:
        try:
            if staging_failed is not None:
                raise staging_failed
            self._on_event(entry, ev)
        except RegionError as exc:
            log.error("%s: cannot install into shared memory: %s", entry.conn.name, exc)
            self._refuse_child(entry, ev, str(exc))

    def _stage_inbound(self, entry: IkeEntry, ev: Any) -> None:
        assert self.region is not None
        self._apply_lifetimes(entry.conn, ev)
        self._staged[ev.inbound.spi] = self.region.install_sa(ev.inbound, Direction.IN)

    def _unstage(self, spis: list[int]) -> None:
        """Inbound halves staged for events that never got installed (the handler failed) go again."""
        assert self.region is not None
        for spi in spis:
            h = self._staged.pop(spi, None)
            if h is not None:
                self.region.delete_sa(h.slot)

    def _label(self, entry: IkeEntry) -> str:
        return f"{entry.conn.name}[{entry.unique}]"

    def _on_event(self, entry: IkeEntry, ev: object) -> None:
        now = self._now()
        if isinstance(ev, IkeSaEstablished):
            entry.established = ev
            entry.established_wall = time.time()
            self._forget_half_open(entry)
            if not self.core_timers:
                if entry.conn.rekey_time:
                    entry.rekey_at = now + entry.conn.rekey_time * random.uniform(0.9, 1.0)
                if entry.conn.dpd_delay:
                    entry.dpd_at = now + entry.conn.dpd_delay
            log.info("IKE SA %s established with %s (%s), %s, local id %s, %s%s%s", self._label(entry),
                     ev.remote[0], ev.remote_id, ike_proposal_name(ev.suite), ev.local_id,
                     "we initiated" if ev.initiator else "peer initiated",
                     ", NAT-T (UDP 4500)" if ev.nat_local or ev.nat_remote else "",
                     ", IKE fragmentation (RFC 7383)" if getattr(entry.ike, "peer_fragmentation", False) else "")
            self._create_pending(entry, now)
            if not ev.initiator:
                # like strongSwan's uniqueids: a peer that connects again replaces its older IKE SA
                for old in list(self.ike_sas.values()):
                    if old is not entry and old.conn is entry.conn and old.established is not None \
                            and str(old.established.remote_id) == str(ev.remote_id) and entry.replaces is None:
                        entry.replaces = old.spi
                        self._maybe_drop_replaced(old.spi)
        elif _installs(ev):
            self._install_child(entry, ev)
        elif type(ev).__name__ == "ChildSaDeleted":
            child = next((c for c in self.children if c.spi_in == getattr(ev, "spi_in", None)), None)
            if child is not None:
                self._release_waiting(child, now, "the peer deleted the old SA")
                if child.state == "REKEYED" and self.rekeyed_inbound_delay is not None:
                    # the outbound half is gone already; the inbound half serves packets still in flight
                    child.remove_at = min(child.remove_at or float("inf"), now + self.rekeyed_inbound_delay)
                else:
                    self._remove_child(child, reason=str(getattr(ev, "reason", "deleted")))
        elif isinstance(ev, IkeSaReauthStarted):
            self._reauth_started(entry, ev)
        elif isinstance(ev, IkeSaReauthenticated):
            old = self.ike_sas.get(ev.old_sa.our_spi)
            log.info("IKE SA %s reauthenticated: it replaces %s, which is being deleted", self._label(entry),
                     self._label(old) if old is not None else "the old IKE SA")
            if old is not None:
                self._process(old)      # send its Delete
        elif type(ev).__name__ == "IkeSaRekeyed":
            self._ike_rekeyed(entry, ev)
        elif type(ev).__name__ == "IkeSaDeleted":
            if not getattr(ev, "rekeyed", False):
                log.info("IKE SA %s with %s deleted: %s", self._label(entry), entry.ike.remote[0],
                         getattr(ev, "reason", ""))
        elif isinstance(ev, ChildSaFailed):
            log.warning("CHILD SA %s of %s failed: %s (%s)", ev.name or "?", self._label(entry),
                        notify_text(ev.notify), ev.reason)
            self._rekey_failed(entry)
        elif isinstance(ev, IkeSaFailed):
            log.warning("IKE SA %s with %s failed: %s (%s)", self._label(entry), entry.ike.remote[0],
                        notify_text(ev.notify), ev.reason)
        else:
            log.info("IKE SA %s: %s", self._label(entry), ev.__class__.__name__)

    def _rekey_failed(self, entry: IkeEntry) -> None:
        """A rekey the peer refused leaves the old pair in service: it can be rekeyed again (the next soft
        limit, timer or operator), instead of waiting for its hard expiry as REKEYING."""
        for c in self.children:
            if c.ike_spi == entry.spi and c.state == "REKEYING" and self._core_status(c) == "INSTALLED":
                c.state = "INSTALLED"

    def _core_status(self, c: ChildEntry) -> str:
        """The IKE core's status of ``c`` (INSTALLED, REKEYING, ...), or "" when the core does not say."""
        entry = self.ike_sas.get(c.ike_spi)
        find = getattr(entry.ike, "find_child", None) if entry is not None else None
        st = find(spi_in=c.spi_in) if find is not None else None
        return getattr(getattr(st, "status", None), "name", "")

    def _ike_rekeyed(self, entry: IkeEntry, ev: Any) -> None:
        """The core replaced this IKE SA by ``ev.new_sa``: route its SPI, move the children to it."""
        new: IkeSA = ev.new_sa
        n = self._add_entry(entry.conn, new, entry.local_ip)
        old_est = entry.established
        if old_est is not None and new.suite is not None:
            n.established = IkeSaEstablished(new.spi_i, new.spi_r, new.initiator, new.suite, old_est.local_id,
                                             old_est.remote_id, new.remote, new.nat_local, new.nat_remote)
            n.established_wall = time.time()
        if getattr(ev, "redundant", False):
            log.info("IKE SA %s: simultaneous rekey, the duplicate %s will be deleted", self._label(entry),
                     self._label(n))
        else:
            for c in self.children:
                if c.ike_spi == entry.spi:
                    c.ike_spi = n.spi
            log.info("IKE SA %s rekeyed: now %s, SPIs %s_i %s_r, %s", self._label(entry), self._label(n),
                     new.spi_i.hex(), new.spi_r.hex(), ike_proposal_name(new.suite) if new.suite else "")
        self._process(n)

    def _reauth_started(self, entry: IkeEntry, ev: IkeSaReauthStarted) -> None:
        """Make-before-break reauthentication: route and drive the new IKE SA; the children move to it as
        its CHILD SAs come up (``rekey_of``), and the core deletes the old IKE SA after that."""
        n = self._add_entry(entry.conn, ev.new_sa, entry.local_ip)
        log.info("IKE SA %s reached its reauth time: reauthenticating as %s (make before break)",
                 self._label(entry), self._label(n))
        self._process(n)

    def _refuse_child(self, entry: IkeEntry, ev: object, why: str) -> None:
        """A CHILD SA the core negotiated could not be installed here: delete it at the peer too."""
        inbound = getattr(ev, "inbound", None)
        if not isinstance(inbound, SA) or entry.ops.delete_child is None:
            return
        log.warning("CHILD SA %s of %s could not be installed (%s): deleting it (SPI in 0x%08x)",
                    getattr(ev, "name", "?"), self._label(entry), why, inbound.spi)
        entry.ops.delete_child(self._now(), inbound.spi)

    def _forget_half_open(self, entry: IkeEntry) -> None:
        for k, v in list(self.half_open.items()):
            if v == entry.spi:
                del self.half_open[k]

    def _create_pending(self, entry: IkeEntry, now: float) -> None:
        while entry.pending:
            spec = entry.pending.pop(0)
            if entry.ops.create_child is None:
                log.warning("%s: child %s needs a CREATE_CHILD_SA exchange, which this IKE core does not "
                            "support yet; only the first child of a connection comes up", self._label(entry),
                            spec.name)
                continue
            entry.ops.create_child(now, spec.child_config())

    def _reconcile_entry(self, entry: IkeEntry) -> None:
        """The core is the truth about which SAs exist: drop what it no longer has."""
        if entry.ike.state == State.DEAD:
            self._drop_entry(entry, "IKE SA gone")
            return
        live = getattr(entry.ike, "children", None)
        if isinstance(live, list):
            spis = {getattr(c, "spi_in", None) for c in live}
            for child in [c for c in self.children if c.ike_spi == entry.spi and c.state != "REKEYED"]:
                if child.spi_in not in spis:
                    self._remove_child(child, reason="deleted by the IKE SA")

    def _drop_entry(self, entry: IkeEntry, reason: str) -> None:
        if self.ike_sas.pop(entry.spi, None) is None:
            return
        self._forget_half_open(entry)
        for child in [c for c in self.children if c.ike_spi == entry.spi]:
            self._remove_child(child, reason=reason)
        if entry.established is not None:
            log.info("IKE SA %s with %s removed (%s)", self._label(entry), entry.ike.remote[0], reason)

    # -- CHILD SAs in shared memory ------------------------------------------------------------------

    def _spec(self, conn: ConnectionConfig, name: str) -> ChildSpec | None:
        return next((c for c in conn.children if c.name == name), None)

    def _apply_lifetimes(self, conn: ConnectionConfig, ev: Any) -> None:
        spec = self._spec(conn, ev.name)
        if spec is not None:
            for sa in (ev.inbound, ev.outbound):
                lt = sa.lifetime
                lt.soft_bytes, lt.hard_bytes = spec.rekey_bytes, spec.life_bytes
                lt.soft_packets, lt.hard_packets = spec.rekey_packets, spec.life_packets
                lt.soft_seconds, lt.hard_seconds = spec.rekey_time, spec.hard_seconds

    def _install_child(self, entry: IkeEntry, ev: Any) -> None:
        assert self.region is not None
        spec = self._spec(entry.conn, ev.name)
        inbound, outbound = ev.inbound, ev.outbound
        h_in = self._staged.pop(inbound.spi, None)
        if h_in is None:
            self._apply_lifetimes(entry.conn, ev)
            h_in = self.region.install_sa(inbound, Direction.IN)
        try:
            h_out = self.region.install_sa(outbound, Direction.OUT)
        except BaseException:
            self.region.delete_sa(h_in.slot)
            raise
        now = self._now()
        rekey_at = expire_at = None
        if spec is not None and spec.rekey_time and not self.core_timers:
            rekey_at = now + spec.rekey_time * random.uniform(0.9, 1.0)     # jitter: both ends won't collide
        if spec is not None and spec.hard_seconds:
            expire_at = now + spec.hard_seconds
        suite = getattr(ev, "suite", None)
        child = ChildEntry(entry.conn.name, ev.name, entry.spi, inbound.spi, outbound.spi, h_in.slot, h_out.slot,
                           h_in.sa_id, h_out.sa_id, esp_proposal_name(suite) if suite else outbound.enc,
                           str(outbound.mode), outbound.udp_encap, list(getattr(ev, "local_ts", [])),
                           list(getattr(ev, "remote_ts", [])), time.time(), now, rekey_at, expire_at)
        if self.gw.export_keys:
            child.keys = (inbound, outbound)
        # the older instance(s) of this child (a rekey or a replacement): outbound moves to the new SA now,
        # their inbound SAs stay a moment for packets already in flight
        rekey_of = getattr(ev, "rekey_of", None)
        if rekey_of is not None:
            olds = [c for c in self.children if c.spi_in == rekey_of and c.state != "REKEYED"]
        else:
            olds = self._live(child.conn, child.name)
        self.children.append(child)
        self.slot_child[h_in.slot] = child
        self.slot_child[h_out.slot] = child
        # a rekey we answered: the initiator may not have our response yet, so ESP on the new outbound SA could
        # reach it before it can decrypt; like strongSwan, keep sending on the old pair until the initiator
        # deletes it (RFC 7296 2.8 has the initiator delete it right after the exchange)
        answered = rekey_of is not None and not getattr(ev, "initiator", True)
        wait = answered and any(self._carries(o) for o in olds)
        # in a rekey collision (RFC 7296 2.8.1) our own rekey may have replaced the old pair already: the
        # pair we answered stands by, and carries the traffic only if ours turns out to be the redundant one;
        # our own pair, when it is the redundant one, never carries it (we delete it next)
        reserve = getattr(ev, "redundant", False) or (
            answered and not wait and any(self._carries(c) for c in self.children if c is not child))
        # a replacement we answered (a reauthentication's IKE_AUTH, or a peer whose control restarted and
        # renegotiates its adopted SAs): the same race, but the peer may hold no IKE SA to delete the old
        # pair with, so its install only gets a moment
        settle = not reserve and rekey_of is None and not getattr(ev, "initiator", True) and \
            any(self._carries(o) for o in olds)
        log.info("CHILD SA %s{%s} installed: %s, SPIs in 0x%08x out 0x%08x, %s %s === %s%s%s", child.name,
                 self._label(entry), child.proposal, child.spi_in, child.spi_out, child.mode,
                 ", ".join(ts_text(t) for t in child.local_ts), ", ".join(ts_text(t) for t in child.remote_ts),
                 ", ESP in UDP" if child.encap else "",
                 ", sending on it once the peer deletes the SA it replaces" if wait else
                 ", sending on it in a moment (the peer is installing it)" if settle else
                 ", redundant after a rekey collision" if getattr(ev, "redundant", False) else
                 ", standing by (a rekey collision)" if reserve else "")
        if wait:
            child.waits_for, child.switch_at, child.expects_delete = olds, now + OUTBOUND_SWITCH_MAX, True
        elif settle:
            child.waits_for, child.switch_at = olds, now + REPLACE_SETTLE
        elif not reserve:
            self._take_over(child, olds, now)

    def _carries(self, c: ChildEntry) -> bool:
        """Whether the SPD sends ``c``'s traffic on ``c``'s outbound SA."""
        return c.slot_out >= 0 and c in self.children and self.policy_sas.get((c.conn, c.name)) == (c.slot_out,)

    def _take_over(self, child: ChildEntry, olds: list[ChildEntry], now: float) -> None:
        """Outbound traffic moves to ``child``; the instances it replaces are retired."""
        child.waits_for, child.switch_at = [], None
        key = (child.conn, child.name)
        self._set_policies(key, policies_for(child.local_ts, child.remote_ts, PRIO_INSTALLED), (child.slot_out,))
        for old in olds:
            if old not in self.children or old.state == "REKEYED":
                continue
            log.info("CHILD SA %s of %s rekeyed: SPIs in 0x%08x out 0x%08x replace in 0x%08x out 0x%08x", child.name,
                     child.conn, child.spi_in, child.spi_out, old.spi_in, old.spi_out)
            self._retire(old, now)

    def _release_waiting(self, old: ChildEntry, now: float, why: str) -> None:
        """``old`` is going: a newer instance that waited for that sends from now on (unless another
        instance took the traffic over meanwhile, as our own rekey in a collision)."""
        for child in [c for c in self.children if old in c.waits_for]:
            self._end_wait(child, now, why)

    def _end_wait(self, child: ChildEntry, now: float, why: str) -> bool:
        """Stop waiting; True when the traffic moved to ``child`` (an instance it waited for still carried it)."""
        if any(self._carries(o) for o in child.waits_for):
            log.debug("CHILD SA %s of %s: outbound moves to 0x%08x (%s)", child.name, child.conn, child.spi_out,
                      why)
            self._take_over(child, child.waits_for, now)
            return True
        child.waits_for, child.switch_at = [], None
        return False

    def _retire(self, old: ChildEntry, now: float) -> None:
        """A newer instance took over: free the outbound slot now, the inbound after the overlap."""
        assert self.region is not None
        old.state = "REKEYED"
        entry = self.ike_sas.get(old.ike_spi)
        core_deletes = entry is not None and entry.ops.delete_child is not None
        # a core with INFORMATIONAL deletes the old pair itself (ChildSaDeleted); the timer is a safety net
        old.remove_at = now + (REKEY_OVERLAP_MAX if core_deletes else REKEY_OVERLAP)
        old.rekey_at = old.expire_at = None
        if old.slot_out in self.slot_child:
            self.slot_child.pop(old.slot_out, None)
            self.region.delete_sa(old.slot_out)
        old.slot_out = -1
        old.keys = None
        if entry is not None and entry.ops.delete_child is not None and not self._child_rekeyed_by_core(old):
            entry.ops.delete_child(now, old.spi_in)
            self._send_all(entry)
        self._maybe_drop_replaced(old.ike_spi)
        self._arm()

    def _child_rekeyed_by_core(self, old: ChildEntry) -> bool:
        # a core that rekeys CHILD SAs deletes the old one itself as part of the exchange
        entry = self.ike_sas.get(old.ike_spi)
        return entry is not None and entry.ops.rekey_child is not None

    def _maybe_drop_replaced(self, ike_spi: bytes) -> None:
        """An IKE SA whose children were all taken over by a replacement is no longer needed."""
        entry = self.ike_sas.get(ike_spi)
        if entry is None or not any(e.replaces == ike_spi for e in self.ike_sas.values()):
            return
        if any(c.ike_spi == ike_spi and c.state != "REKEYED" for c in self.children):
            return
        if entry.ops.delete is not None:
            entry.ops.delete(self._now())
            self._send_all(entry)
            if entry.ike.state != State.DEAD:
                # the core ends its CHILD SAs (ChildSaDeleted: the old inbound slots go) when the Delete
                # exchange is over, and the entry is dropped then
                return
        else:
            log.info("IKE SA %s replaced; the peer is not told (this IKE core has no INFORMATIONAL Delete yet)",
                     self._label(entry))
        for c in [c for c in self.children if c.ike_spi == ike_spi]:
            c.ike_spi = b""             # keep the overlapping inbound slots until their time
        self.ike_sas.pop(ike_spi, None)

    def _remove_child(self, child: ChildEntry, reason: str, keep_trap: bool = True) -> None:
        """Delete both SAs of a CHILD SA (keys zeroed in the region) and fix up its policies."""
        assert self.region is not None
        if child not in self.children:
            return
        now = self._now()
        self._release_waiting(child, now, reason)
        carried = self._carries(child)
        self.children.remove(child)
        key = (child.conn, child.name)
        heirs = self._live(*key)
        if carried and heirs:
            # it carried the outbound traffic while a sibling lives on (e.g. after a rekey collision the
            # redundant pair is deleted): move the traffic before its slot is freed, never leave the SPD
            # pointing at a deleted SA
            heir = next((c for c in reversed(heirs) if not c.waits_for), heirs[-1])
            self._take_over(heir, heir.waits_for, now)
        for slot in (child.slot_in, child.slot_out):
            if slot >= 0 and self.slot_child.get(slot) is child:
                del self.slot_child[slot]
                try:
                    self.region.delete_sa(slot)
                except KeyError:
                    pass            # already deleted (e.g. by the fastpath's hard expiry handling)
        child.keys = None
        if child.state != "REKEYED":
            log.info("CHILD SA %s of %s removed (%s): SPIs in 0x%08x out 0x%08x", child.name, child.conn, reason,
                     child.spi_in, child.spi_out)
            if not heirs:
                conn = self.config.connections.get(child.conn)
                spec = self._spec(conn, child.name) if conn else None
                if keep_trap and spec is not None and spec.start_action == "trap":
                    self._set_policies(key, policies_for(spec.local_ts, spec.remote_ts, PRIO_TRAP), ())
                else:
                    self._drop_policies(key)

    # -- SPD -------------------------------------------------------------------------------------------

    def _install_traps(self) -> None:
        for conn in self.config.connections.values():
            for spec in conn.children:
                if spec.start_action == "trap":
                    pols = policies_for(spec.local_ts, spec.remote_ts, PRIO_TRAP)
                    self._set_policies((conn.name, spec.name), pols, ())
                    log.info("trap policies for %s/%s installed: %s === %s", conn.name, spec.name,
                             ", ".join(spec.local_ts_text), ", ".join(spec.remote_ts_text))

    def _set_policies(self, key: tuple[str, str], pols: list[Policy], sas: tuple[int, ...]) -> None:
        """Make ``key``'s SPD entries exactly ``pols``, bound to ``sas`` (empty: trap, ACQUIRE on match)."""
        assert self.region is not None
        cur = self.policies.get(key)
        if cur is not None and self.policy_sel.get(key) == pols:
            for index in cur:
                self.region.bind_policy(index, sas)      # same selectors: rebinding needs no recompile
            self.policy_sas[key] = sas
            return
        self._drop_policies(key, commit=False)
        idx = []
        for i, p in enumerate(pols):
            index = self.region.add_policy(Policy(p.src, p.dst, p.proto, p.sport, p.dport, p.action, p.priority,
                                                  policy_id=hash((key, i)) & 0xFFFFFFFF), sas, commit=False)
            idx.append(index)
            self.policy_key[index] = key
        self.policies[key], self.policy_sel[key], self.policy_sas[key] = idx, pols, sas
        self.region.commit_policies()

    def _drop_policies(self, key: tuple[str, str], commit: bool = True) -> None:
        assert self.region is not None
        idx = self.policies.pop(key, None)
        self.policy_sel.pop(key, None)
        self.policy_sas.pop(key, None)
        if not idx:
            return
        for index in idx:
            self.region.delete_policy(index, commit=False)
            self.policy_key.pop(index, None)
        if commit:
            self.region.commit_policies()

    # -- initiating, rekeying, deleting ---------------------------------------------------------------

    def initiate(self, conn: ConnectionConfig, first: ChildSpec | None, more: list[ChildSpec] | None = None,
                 replaces: bytes | None = None) -> IkeEntry | None:
        if not conn.can_initiate:
            log.warning("%s: cannot initiate: remote_addrs is %%any", conn.name)
            return None
        remote_ip = next(a for a in conn.remote_addrs if a != "%any")
        local_ip = conn.local_addrs[0]
        if conn.any_local:
            # local_addrs %any: the address the kernel routes to the peer from, if we listen on it
            src = route_source(remote_ip, conn.remote_port)
            if src is None or (src, self.gw.ike_port) not in self._socks:
                log.warning("%s: cannot initiate to %s: %s", conn.name, remote_ip,
                            "no route" if src is None else f"source address {src} appeared after start-up "
                            "(reload the configuration to listen on it)")
                return None
            local_ip = src
        kids = [first] if first is not None else []
        ike = IkeSA(conn.ike_config(self.gw, kids + list(more or []), local_ip=local_ip), initiator=True,
                    local=(local_ip, self.gw.ike_port), remote=(remote_ip, conn.remote_port))
        entry = self._add_entry(conn, ike, local_ip)
        entry.pending = list(more or [])
        entry.replaces = replaces
        ike.initiate(self._now(), children=[first.child_config()] if first is not None else [])
        log.info("initiating IKE SA %s to %s:%d%s", self._label(entry), remote_ip, conn.remote_port,
                 f" with child {first.name}" if first else "")
        self._process(entry)
        return entry

    def _connecting(self, conn_name: str) -> IkeEntry | None:
        return next((e for e in self.ike_sas.values() if e.conn.name == conn_name and e.replaces is None
                     and e.ike.state in (State.CREATED, State.CONNECTING)), None)

    def _up(self, conn_name: str) -> IkeEntry | None:
        return next((e for e in self.ike_sas.values() if e.conn.name == conn_name
                     and e.ike.state == State.ESTABLISHED), None)

    def _child_up(self, conn: str, name: str) -> ChildEntry | None:
        return next(iter(self._live(conn, name)), None)

    def _live(self, conn: str, name: str) -> list[ChildEntry]:
        """The instances of a connection's child that are not yet replaced, oldest first."""
        return [c for c in self.children if (c.conn, c.name) == (conn, name) and c.state != "REKEYED"]

    def bring_up(self, conn: ConnectionConfig, spec: ChildSpec, why: str) -> str:
        """Make sure ``spec`` gets negotiated: reuse an IKE SA that is up or coming up."""
        if self._child_up(conn.name, spec.name):
            return f"{spec.name} is already up"
        if (entry := self._connecting(conn.name)) is not None:
            if spec.name not in [c.name for c in entry.pending] and entry.ike.config.children[:1] \
                    and entry.ike.config.children[0].name != spec.name:
                entry.pending.append(spec)
            return f"{conn.name} is connecting"
        if (entry := self._up(conn.name)) is not None:
            if entry.ops.create_child is None:
                return (f"{conn.name} is up but {spec.name} needs CREATE_CHILD_SA, which this IKE core does not "
                        "support yet")
            entry.ops.create_child(self._now(), spec.child_config())
            self._process(entry)
            return f"creating {spec.name} on {self._label(entry)}"
        log.info("%s: negotiating %s (%s)", conn.name, spec.name, why)
        self.initiate(conn, spec)
        return f"initiating {conn.name} with {spec.name}"

    def rekey_child(self, child: ChildEntry, why: str) -> None:
        if child.state != "INSTALLED":
            return
        entry = self.ike_sas.get(child.ike_spi)
        conn = self.config.connections.get(child.conn)
        now = self._now()
        child.rekey_at = None
        if entry is not None and entry.ops.rekey_child is not None:
            log.info("rekeying CHILD SA %s{%s} (%s)", child.name, self._label(entry), why)
            child.state = "REKEYING"
            entry.ops.rekey_child(now, child.spi_in)
            self._process(entry)
            return
        if conn is None or not conn.can_initiate:
            log.warning("CHILD SA %s of %s needs a rekey (%s) but the IKE core cannot rekey and the peer is %%any: "
                        "it stays until its hard lifetime", child.name, child.conn, why)
            return
        # No CREATE_CHILD_SA in the core yet: replace the whole IKE SA, make before break.
        spec = self._spec(conn, child.name)
        log.info("CHILD SA %s of %s needs a rekey (%s): this IKE core has no CREATE_CHILD_SA yet, so the IKE SA "
                 "is re-established and replaces the old one", child.name, child.conn, why)
        child.state = "REKEYING"
        self.initiate(conn, spec, replaces=child.ike_spi)

    def rekey_ike(self, entry: IkeEntry, why: str) -> None:
        entry.rekey_at = None
        if entry.ops.rekey_ike is not None:
            log.info("rekeying IKE SA %s (%s)", self._label(entry), why)
            entry.ops.rekey_ike(self._now())
            self._process(entry)
            return
        kids = [c for c in self.children if c.ike_spi == entry.spi and c.state == "INSTALLED"]
        if not entry.conn.can_initiate or not entry.ike.initiator and not kids:
            log.info("IKE SA %s reached its rekey time (%s); the core cannot rekey IKE SAs yet and this side does "
                     "not re-authenticate it", self._label(entry), why)
            return
        spec = self._spec(entry.conn, kids[0].name) if kids else None
        log.info("IKE SA %s reached its rekey time (%s): re-establishing it (make before break)", self._label(entry),
                 why)
        for c in kids:
            c.state = "REKEYING"
        self.initiate(entry.conn, spec, replaces=entry.spi)

    def terminate_conn(self, conn_name: str) -> int:
        n = 0
        now = self._now()
        for entry in [e for e in self.ike_sas.values() if e.conn.name == conn_name]:
            if entry.ops.delete is not None and entry.established is not None:
                entry.ops.delete(now)
                self._send_all(entry)
            elif entry.established is not None:
                log.info("IKE SA %s deleted locally; the peer is not told (no INFORMATIONAL Delete in this IKE core "
                         "yet)", self._label(entry))
            self._drop_entry(entry, "terminated by the operator")
            n += 1
        return n

    def terminate_child(self, conn_name: str, name: str) -> int:
        n = 0
        now = self._now()
        for child in [c for c in self.children if (c.conn, c.name) == (conn_name, name)]:
            entry = self.ike_sas.get(child.ike_spi)
            if entry is not None and entry.ops.delete_child is not None:
                entry.ops.delete_child(now, child.spi_in)
                self._send_all(entry)
            self._remove_child(child, reason="terminated by the operator")
            n += 1
        return n

    # -- timers -------------------------------------------------------------------------------------

    def _deadlines(self) -> list[float]:
        out = []
        for e in self.ike_sas.values():
            t = e.ike.get_timer()
            if t is not None:
                out.append(t)
            for t in (e.rekey_at, e.dpd_at):
                if t is not None:
                    out.append(t)
            if e.established is None:
                out.append(e.created + HALF_OPEN_TIMEOUT)
        for c in self.children:
            out += [t for t in (c.rekey_at, c.expire_at, c.remove_at, c.switch_at) if t is not None]
        return out

    def _arm(self) -> None:
        if self._loop is None or self._stop.is_set():
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        ds = self._deadlines()
        if ds:
            self._timer = self._loop.call_at(min(ds), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self._run_timers(self._now())
        except Exception:       # noqa: BLE001 - keep the daemon alive, say what broke
            log.exception("internal error in the timer handler")
        self._arm()

    def _run_timers(self, now: float) -> None:
        for entry in list(self.ike_sas.values()):
            if entry.spi not in self.ike_sas:
                continue
            t = entry.ike.get_timer()
            if t is not None and t <= now:
                entry.ike.handle_timer(now)
                self._process(entry)
            if entry.spi not in self.ike_sas:
                continue
            if entry.established is None and now >= entry.created + HALF_OPEN_TIMEOUT \
                    and entry.ike.state != State.ESTABLISHED:
                log.info("IKE SA %s with %s did not complete within %.0f s, dropped", self._label(entry),
                         entry.ike.remote[0], HALF_OPEN_TIMEOUT)
                self._drop_entry(entry, "half-open timeout")
                continue
            if entry.rekey_at is not None and now >= entry.rekey_at:
                self.rekey_ike(entry, "rekey_time")
            if entry.dpd_at is not None and now >= entry.dpd_at:
                entry.dpd_at = now + entry.conn.dpd_delay
                if entry.ops.dpd is not None:
                    entry.ops.dpd(now)
                    self._process(entry)
        for child in list(self.children):
            if child not in self.children:
                continue            # removed while an earlier one was handled
            if child.switch_at is not None and now >= child.switch_at:
                if any(self._core_status(o) == "REKEYING" for o in child.waits_for):
                    child.switch_at = now + OUTBOUND_SWITCH_MAX     # a rekey collision: our own exchange settles it
                elif self._end_wait(child, now, "timeout") and child.expects_delete:
                    log.warning("CHILD SA %s of %s: the peer did not delete the SA it rekeyed within %.0f s; "
                                "sending on SPI 0x%08x anyway", child.name, child.conn, OUTBOUND_SWITCH_MAX,
                                child.spi_out)
            if child.remove_at is not None and now >= child.remove_at:
                self._remove_child(child, reason="replaced")
            elif child.expire_at is not None and now >= child.expire_at:
                self._expire_child(child, "life_time reached")
            elif child.rekey_at is not None and now >= child.rekey_at:
                self.rekey_child(child, "rekey_time")

    def _expire_child(self, child: ChildEntry, why: str) -> None:
        entry = self.ike_sas.get(child.ike_spi)
        if entry is not None and entry.ops.delete_child is not None:
            entry.ops.delete_child(self._now(), child.spi_in)
            self._send_all(entry)
        self._remove_child(child, reason=why)

    # -- fastpath events ----------------------------------------------------------------------------

    async def _poll_events(self) -> None:
        beat = 0.0
        while True:
            try:
                self.drain_events()
                if self.region is not None and time.monotonic() - beat > 1.0:
                    self.region.heartbeat()
                    beat = time.monotonic()
            except Exception:    # noqa: BLE001
                log.exception("internal error draining fastpath events")
            await asyncio.sleep(EVENT_POLL)

    def drain_events(self) -> None:
        assert self.region is not None
        for ev in self.region.events(delete_expired=False):
            self._count(f"event_{ev.kind}")
            if ev.kind == "acquire":
                key = self.policy_key.get(ev.policy)
                if key is None:
                    continue
                conn = self.config.connections.get(key[0])
                spec = self._spec(conn, key[1]) if conn else None
                if conn is not None and spec is not None:
                    log.info("ACQUIRE for %s/%s: %s -> %s proto %d", key[0], key[1], ev.src, ev.dst, ev.proto)
                    self.bring_up(conn, spec, f"traffic {ev.src} -> {ev.dst}")
                continue
            child = self.slot_child.get(ev.slot)
            if child is None or ev.sa_id not in (child.id_in, child.id_out):
                continue
            if ev.kind == "soft-expire":
                self.rekey_child(child, f"soft limit reached after {ev.packets} packets / {ev.bytes} bytes")
            elif ev.kind in ("hard-expire", "seq-exhausted"):
                self._expire_child(child, f"{ev.kind} reported by the fastpath")
            elif ev.kind.startswith("alarm"):
                log.warning("CHILD SA %s of %s: %s: %d drops in the alarm window (SPI 0x%08x)", child.name,
                            child.conn, ev.kind, ev.packets, child.spi_in)
        self._arm()


# -- entry point ------------------------------------------------------------------------------------

async def run_daemon(config: Config, *, control_only: bool = True) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    return await run_until_signal(Daemon(config, control_only=control_only))


async def run_until_signal(daemon: Daemon) -> int:
    """Start daemon (1 when it cannot), then serve it until SIGTERM/SIGINT (0)."""
    loop = asyncio.get_running_loop()
    try:
        await daemon.start()
    except (RegionError, OSError, ControlError) as exc:
        log.error("cannot start: %s", exc)
        await daemon.shutdown()
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.serve()
    return 0
