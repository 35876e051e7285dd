"""The IKE control daemon: one asyncio shell around the sans-IO IKE core and the parts with one job each.

It binds UDP (``control.udp_sockets``) on the IKE and NAT-T ports of every local address the
configuration names; new IKE_SA_INIT requests pass the responder gate (``control.responder_gate``)
before any IKE state is made for them, known SPIs go to their ``IkeSA`` (``control.ike_sa_table``).
It initiates connections (start_action=start, ACQUIREs, the operator), drives retransmission and
lifetime timers, and acts on what the core negotiates, dispatched by event type: CHILD SAs go into
shared memory through ``control.child_installer``, which binds the SPD (``control.policy_table``).
``control.fastpath_events`` drains the fastpath's event ring: ACQUIRE starts a negotiation,
SOFT_EXPIRE a rekey, HARD_EXPIRE/SEQ_EXHAUSTED a delete.  The control socket's commands are parts
plugged in (``control.commands``, ``control.gateway``), as is what a supervised restart adopts.

Logs say what an operator needs (who, which proposal, why it failed), never keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Protocol

from control.child_installer import OUTBOUND_SWITCH_MAX, ChildInstaller, spec_of
from control.config import ChildSpec, Config, ConnectionConfig, GatewayConfig, core_schedules_rekeys
from control.ctl import ControlError, ControlServer, Handler
from control.fastpath_events import FastpathEventPump
from control.host_addrs import local_addresses, route_source
from control.ike.events import (
    ChildSaEstablished,
    Datagram,
    State,
)
from control.ike.sa import IkeSA
from control.ike_counts import IkeCounts
from control.ike_event_handlers import IkeEventHandlers
from control.ike_intake import IkeIntake
from control.ike_sa_table import IkeSaTable
from control.initiate_outcome import OutcomeWaiters
from control.log_fields import child_fields, ike_fields
from control.policy_table import PolicyTable
from control.pools import Pools, pools_of
from control.responder_gate import AdmissionGate
from control.sa_records import INSTALLED, REKEYED, REKEYING, ChildEntry, IkeEntry
from control.sa_timers import deadlines, run_due
from control.shm import ControlRegion, RegionError
from control.udp_sockets import UdpSocket

__all__ = ["Daemon", "DaemonPart", "run_until_signal", "open_fresh_region", "OUTBOUND_SWITCH_MAX"]

log = logging.getLogger("ipsecgw.daemon")


class DaemonPart(Protocol):
    """Something plugged into the daemon: control socket commands and a say in start and stop."""

    def handlers(self) -> dict[str, Handler]: ...

    def started(self) -> None: ...

    def stopping(self) -> None: ...


def open_fresh_region(gw: GatewayConfig) -> ControlRegion:
    """The region at ``gw.shm_path``, emptied of whatever a previous control process left in it."""
    path = gw.shm_path
    if not os.path.exists(path):
        region = ControlRegion.create(path, gw.capacities)
        c = gw.capacities
        log.info("created region %s (%d SA slots, %d policies)", path, c.n_sa, c.n_spd)
        return region
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
    return region


class Daemon:
    """The control process.  ``await start()``, then ``await serve()`` until ``stop()``."""

    def __init__(self, config: Config, *, control_only: bool = True, rekeyed_inbound_delay: float | None = None,
                 gate: AdmissionGate | None = None):
        self.config = config
        self.gw = config.gateway
        self.control_only = control_only
        # in front of IKE state: the gateway section's half-open limits, COOKIEs past its threshold
        self.gate = gate or AdmissionGate.for_gateway(config.gateway)
        self.region_opener: Callable[[GatewayConfig], ControlRegion] = open_fresh_region
        self.parts: list[DaemonPart] = []
        self.region: ControlRegion | None = None
        self.ike_sas = IkeSaTable()
        self.intake = IkeIntake(self, config, self.ike_sas, self.gate)
        # virtual IPs of road warriors (docs/remote-access.md): leased by the core through the intake's
        # IKE configs, released here when their IKE SA is gone
        self.pools = Pools(pools_of(config))
        self.intake.addresses = self.pools
        self.spd: PolicyTable | None = None
        self.installer: ChildInstaller | None = None
        self.events: IkeEventHandlers | None = None
        self._rekeyed_inbound_delay = rekeyed_inbound_delay
        self.stats: dict[str, int] = {}
        self.ike_counts = IkeCounts()       # messages by exchange, failures by reason (status, /metrics)
        self.socks: dict[tuple[str, int], UdpSocket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._ctl: ControlServer | None = None
        self.outcomes = OutcomeWaiters()        # `ipsecgw initiate` waiting for its negotiation to end
        self.started_wall = time.time()
        # the core keeps rekey and DPD timers itself when its configs carry them; else the daemon does
        self.core_timers = core_schedules_rekeys()

    @property
    def children(self) -> list[ChildEntry]:
        return self.installer.children if self.installer is not None else []

    @property
    def rekeyed_inbound_delay(self) -> float | None:
        """Seconds a rekeyed CHILD SA's inbound half outlives the peer's Delete of it (None: removed at once)."""
        return self._rekeyed_inbound_delay

    @rekeyed_inbound_delay.setter
    def rekeyed_inbound_delay(self, value: float | None) -> None:
        self._rekeyed_inbound_delay = value
        if self.installer is not None:
            self.installer.rekeyed_inbound_delay = value

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open_region()
        await self.listen(sorted({a for c in self.config.connections.values() for a in c.local_addrs}),
                          RegionError)
        handlers: dict[str, Handler] = {}
        for part in self.parts:
            handlers.update(part.handlers())
        self._ctl = ControlServer(self.gw.control_socket, handlers)
        await self._ctl.start()
        assert self.spd is not None and self.installer is not None and self.region is not None
        self.spd.install_traps(self.config)
        pump = FastpathEventPump(self.region, self.spd, self.installer.slot_child, self, self.count)
        self._tasks.append(asyncio.create_task(pump.run(self.arm)))
        for conn in self.config.connections.values():
            starts = [c for c in conn.children if c.start_action == "start"]
            if starts:
                self.initiate(conn, starts[0], starts[1:])
        log.info("ipsecgw control started: %d connection(s), IKE on %s ports %d/%d, shm %s, control socket %s%s",
                 len(self.config.connections), ", ".join(sorted({ip for ip, _ in self.socks})), self.gw.ike_port,
                 self.gw.natt_port, self.gw.shm_path, self.gw.control_socket,
                 " (control only: no fastpath attached)" if self.control_only else "")
        for part in self.parts:
            part.started()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        for part in self.parts:
            part.stopping()
        log.info("shutting down: deleting %d IKE SA(s) and %d CHILD SA(s)", len(self.ike_sas), len(self.children))
        for t in self._tasks:
            t.cancel()
        now = self.now()
        for entry in self.ike_sas:
            if entry.established is not None:
                try:
                    entry.ike.delete(now)
                    self.send_all(entry)
                except Exception:      # noqa: BLE001 - shutting down regardless
                    log.exception("IKE SA delete failed")
        if self.installer is not None:
            for child in list(self.installer.children):
                self.installer.remove(child, reason="shutdown", keep_trap=False)
        if self.spd is not None:
            self.spd.drop_all()
        if self._timer:
            self._timer.cancel()
        await asyncio.sleep(0)          # let the delete datagrams leave
        for s in self.socks.values():
            s.close()
        if self._ctl is not None:
            await self._ctl.close()
        if self.region is not None:
            self.region.close()
            self.region = None
        self.ike_sas.clear()
        log.info("stopped")

    def _open_region(self) -> None:
        self.region = region = self.region_opener(self.gw)
        self.spd = PolicyTable(region)
        self.installer = ChildInstaller(self, self.config, region, self.spd, self.ike_sas,
                                        core_timers=self.core_timers,
                                        rekeyed_inbound_delay=self._rekeyed_inbound_delay)
        self.events = IkeEventHandlers(self, self.ike_sas, self.installer, self.gate, core_timers=self.core_timers,
                                       pools=self.pools)

    async def listen(self, ips: list[str], error: type[Exception]) -> list[str]:
        """Bind the IKE and NAT-T ports on each of ips; a bind failure raises error.  ``%any`` stands for
        every address the host has now (one socket each, so a datagram's local address is known)."""
        assert self._loop is not None
        if "%any" in ips:
            found = local_addresses()
            log.info("local_addrs %%any: IKE on %s", ", ".join(found) or "no address found")
            ips = sorted({i for i in ips if i != "%any"} | {i for i in found if (i, self.gw.ike_port)
                                                              not in self.socks})
        for ip in ips:
            for port in (self.gw.ike_port, self.gw.natt_port):
                try:
                    # NAT-T port: SO_REUSEPORT so the fastpath can join the port and steer ESP-in-UDP to
                    # itself with a reuseport BPF program (fastpath/io/sockets.py); IKE still comes here
                    s = UdpSocket.bind(ip, port, reuse_port=port == self.gw.natt_port)
                except OSError as exc:
                    raise error(f"cannot listen on UDP {ip} port {port}: {exc.strerror}") from None
                s.watch(self._loop, self._readable)
                self.socks[(ip, port)] = s
        return ips

    # -- datagrams ------------------------------------------------------------------------------

    def now(self) -> float:
        return self._now()

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _readable(self, s: UdpSocket) -> None:
        local_ip = s.local_ip

        def deliver(data: bytes, port: int, remote: tuple[str, int]) -> None:
            self.ike_counts.received(data, port == self.gw.natt_port)
            try:
                self.intake.received(data, local_ip, port, remote)
            except Exception:           # noqa: BLE001 - one bad datagram must never end the daemon
                log.exception("internal error handling a datagram from %s", remote[0])

        s.read_batch(deliver)

    def send_all(self, entry: IkeEntry) -> None:
        for d in entry.ike.datagrams_to_send():
            self.send(entry.local_ip, d)

    def send(self, local_ip: str, d: Datagram) -> None:
        s = self.socks.get((local_ip, d.local_port))
        if s is None:
            log.warning("no socket on %s port %d to send an IKE message from", local_ip, d.local_port)
            return
        s.send(d.data, d.remote)
        self.ike_counts.sent(d.data, d.local_port == self.gw.natt_port)

    # -- driving the core ------------------------------------------------------------------------------

    def process(self, entry: IkeEntry) -> None:
        """Send what the core queued, act on its events, notice a dead SA; then re-arm the timer.

        New CHILD SAs go into shared memory *before* the send.  A rekey we initiated is installed whole:
        the peer has it already, and our outbound traffic should move to it before our Delete of the pair
        it replaces tells the peer to drop that.  One we answered gets its inbound half: the response among
        these datagrams lets the peer send on it at once, and on a loaded host its ESP beat a later
        install (counted no-sa drops at a rekey).  Everything else waits until after the send, in event
        order: acting on all events first put e.g. the Delete of a replaced IKE SA ahead of the IKE_AUTH
        response that made the replacement, and the peer lost its make-before-break."""
        assert self.installer is not None
        events = []
        while (ev := entry.ike.next_event()) is not None:
            events.append(ev)
        done: set[int] = set()
        staged: dict[int, RegionError] = {}
        mine: list[int] = []            # inbound SPIs this call staged (a nested call has its own)
        for ev in events:
            if not isinstance(ev, ChildSaEstablished):
                continue
            if ev.initiator:
                if ev.rekey_of is not None:      # our Delete of what it replaces is queued
                    self._act(entry, ev, None)
                    done.add(id(ev))
                continue                # a new one: the peer has it, and it takes its turn after the send
            try:
                self.installer.stage_inbound(entry, ev)
                mine.append(ev.inbound.spi)
            except RegionError as exc:
                staged[id(ev)] = exc
        self.send_all(entry)
        for ev in events:
            if id(ev) not in done:
                self._act(entry, ev, staged.get(id(ev)))
        while (ev := entry.ike.next_event()) is not None:      # raised while acting on the others
            self._act(entry, ev, None)
        self.installer.unstage(mine)
        self.send_all(entry)            # events may have queued requests (create_child...)
        self._reconcile_entry(entry)
        self.arm()

    def _act(self, entry: IkeEntry, ev: object, staging_failed: RegionError | None) -> None:
        self.ike_counts.event(ev)
        try:
            if staging_failed is not None:
                raise staging_failed
            assert self.events is not None
            self.events.handle(ev, entry)
            self.outcomes.note(entry, ev)
        except RegionError as exc:
            log.error("%s: cannot install into shared memory: %s", entry.conn.name, exc)
            if isinstance(ev, ChildSaEstablished):
                self._refuse_child(entry, ev, str(exc))

    def _refuse_child(self, entry: IkeEntry, ev: ChildSaEstablished, why: str) -> None:
        """A CHILD SA the core negotiated could not be installed here: delete it at the peer too."""
        log.warning("CHILD SA %s of %s could not be installed (%s): deleting it (SPI in 0x%08x)",
                    ev.name, entry.label, why, ev.inbound.spi,
                    extra={**ike_fields(entry), "child": ev.name, "spi": f"0x{ev.inbound.spi:08x}"})
        entry.ike.delete_child(self._now(), ev.inbound.spi)

    def _reconcile_entry(self, entry: IkeEntry) -> None:
        """The core is the truth about which SAs exist: drop what it no longer has."""
        if entry.ike.state == State.DEAD:
            self.drop_entry(entry, "IKE SA gone")
            return
        assert self.installer is not None
        self.installer.reconcile(entry)

    def drop_entry(self, entry: IkeEntry, reason: str) -> None:
        if self.ike_sas.pop(entry.spi) is None:
            return
        self._release_leases(entry)
        self.outcomes.dropped(entry, reason)
        timed_out = bool(entry.ike.stats.get("half_open_timeout"))
        if timed_out:
            self.ike_counts.timed_out()
            log.info("IKE SA %s with %s did not complete within %.0f s, dropped", entry.label,
                     entry.ike.remote[0], entry.ike.config.half_open_timeout, extra=ike_fields(entry))
        self.gate.closed(entry.spi, timed_out=timed_out)
        assert self.installer is not None
        for child in self.installer.of_ike(entry.spi):
            self.installer.remove(child, reason=reason)
        if entry.established is not None:
            log.info("IKE SA %s with %s removed (%s)", entry.label, entry.ike.remote[0], reason,
                     extra=ike_fields(entry))

    def maybe_drop_replaced(self, ike_spi: bytes) -> None:
        """An IKE SA whose children were all taken over by a replacement is no longer needed."""
        entry = self.ike_sas.get(ike_spi)
        if entry is None or not self.ike_sas.is_replaced(ike_spi):
            return
        if any(c.ike_spi == ike_spi and c.state != REKEYED for c in self.children):
            return
        entry.ike.delete(self._now())
        self.send_all(entry)
        if entry.ike.state != State.DEAD:
            # the core ends its CHILD SAs (ChildSaDeleted: the old inbound slots go) when the Delete
            # exchange is over, and the entry is dropped then
            return
        for c in self.children:
            if c.ike_spi == ike_spi:
                c.ike_spi = b""             # keep the overlapping inbound slots until their time
        self.ike_sas.pop(ike_spi)
        self._release_leases(entry)

    def _release_leases(self, entry: IkeEntry) -> None:
        for addr in self.pools.release(entry.spi):
            log.info("IKE SA %s: virtual IP %s released (kept for %s)", entry.label, addr,
                     entry.ike.remote_identity, extra=ike_fields(entry))

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
            if src is None or (src, self.gw.ike_port) not in self.socks:
                log.warning("%s: cannot initiate to %s: %s", conn.name, remote_ip,
                            "no route" if src is None else f"source address {src} appeared after start-up "
                            "(reload the configuration to listen on it)")
                return None
            local_ip = src
        kids = [first] if first is not None else []
        ike = IkeSA(conn.ike_config(self.gw, kids + list(more or []), local_ip=local_ip), initiator=True,
                    local=(local_ip, self.gw.ike_port), remote=(remote_ip, conn.remote_port))
        entry = self.ike_sas.add(conn, ike, local_ip, self._now())
        entry.pending = list(more or [])
        entry.replaces = replaces
        ike.initiate(self._now(), children=[first.child_config()] if first is not None else [])
        log.info("initiating IKE SA %s to %s:%d%s", entry.label, remote_ip, conn.remote_port,
                 f" with child {first.name}" if first else "", extra=ike_fields(entry))
        self.process(entry)
        return entry

    def bring_up(self, conn: ConnectionConfig, spec: ChildSpec, why: str) -> str:
        """Make sure ``spec`` gets negotiated: reuse an IKE SA that is up or coming up."""
        assert self.installer is not None
        if self.installer.child_up(conn.name, spec.name):
            return f"{spec.name} is already up"
        if (entry := self.ike_sas.connecting(conn.name)) is not None:
            if spec.name not in [c.name for c in entry.pending] and entry.ike.config.children[:1] \
                    and entry.ike.config.children[0].name != spec.name:
                entry.pending.append(spec)
            return f"{conn.name} is connecting"
        if (entry := self.ike_sas.up(conn.name)) is not None:
            entry.ike.create_child(self._now(), spec.child_config())
            self.process(entry)
            return f"creating {spec.name} on {entry.label}"
        log.info("%s: negotiating %s (%s)", conn.name, spec.name, why, extra={"conn": conn.name, "child": spec.name})
        self.initiate(conn, spec)
        return f"initiating {conn.name} with {spec.name}"

    def rekey_child(self, child: ChildEntry, why: str) -> None:
        if child.state != INSTALLED:
            return
        child.rekey_at = None
        entry = self.ike_sas.get(child.ike_spi)
        if entry is None:
            self._replace_for_rekey(child, why)
            return
        log.info("rekeying CHILD SA %s{%s} (%s)", child.name, entry.label, why, extra=child_fields(child, entry))
        child.state = REKEYING
        entry.ike.rekey_child(self._now(), child.spi_in)
        self.process(entry)

    def _replace_for_rekey(self, child: ChildEntry, why: str) -> None:
        """A CHILD SA without an IKE SA to rekey it on: re-establish one that replaces it (make before break)."""
        conn = self.config.connections.get(child.conn)
        if conn is None or not conn.can_initiate:
            log.warning("CHILD SA %s of %s needs a rekey (%s) but its IKE SA is gone and the peer is %%any: "
                        "it stays until its hard lifetime", child.name, child.conn, why, extra=child_fields(child))
            return
        log.info("CHILD SA %s of %s needs a rekey (%s) but its IKE SA is gone: a new IKE SA is established and "
                 "replaces it", child.name, child.conn, why, extra=child_fields(child))
        child.state = REKEYING
        self.initiate(conn, spec_of(self.config, conn.name, child.name), replaces=child.ike_spi)

    def rekey_ike(self, entry: IkeEntry, why: str) -> None:
        entry.rekey_at = None
        log.info("rekeying IKE SA %s (%s)", entry.label, why, extra=ike_fields(entry))
        entry.ike.rekey_ike(self._now())
        self.process(entry)

    def terminate_conn(self, conn_name: str) -> int:
        n = 0
        now = self._now()
        for entry in self.ike_sas.of_conn(conn_name):
            if entry.established is not None:
                entry.ike.delete(now)
                self.send_all(entry)
            self.drop_entry(entry, "terminated by the operator")
            n += 1
        return n

    def terminate_child(self, conn_name: str, name: str) -> int:
        n = 0
        now = self._now()
        for child in [c for c in self.children if (c.conn, c.name) == (conn_name, name)]:
            self.delete_child(child, now, "terminated by the operator")
            n += 1
        return n

    def delete_child(self, child: ChildEntry, now: float, why: str) -> None:
        assert self.installer is not None
        entry = self.ike_sas.get(child.ike_spi)
        if entry is not None:
            entry.ike.delete_child(now, child.spi_in)
            self.send_all(entry)
        self.installer.remove(child, reason=why)

    # -- what the fastpath reports (control.fastpath_events) --------------------------------------------

    def acquire(self, conn_name: str, child_name: str, src: str, dst: str, proto: int) -> None:
        conn = self.config.connections.get(conn_name)
        spec = spec_of(self.config, conn_name, child_name)
        if conn is not None and spec is not None:
            log.info("ACQUIRE for %s/%s: %s -> %s proto %d", conn_name, child_name, src, dst, proto,
                     extra={"conn": conn_name, "child": child_name})
            self.bring_up(conn, spec, f"traffic {src} -> {dst}")

    def soft_expired(self, child: ChildEntry, why: str) -> None:
        self.rekey_child(child, why)

    def hard_expired(self, child: ChildEntry, why: str) -> None:
        self.delete_child(child, self._now(), why)

    # -- timers -------------------------------------------------------------------------------------

    def _deadlines(self) -> list[float]:
        return deadlines(self.ike_sas, self.children)

    def arm(self) -> None:
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
        self.arm()

    def _run_timers(self, now: float) -> None:
        assert self.installer is not None
        run_due(self, self.ike_sas, self.installer, now)


# -- entry point ------------------------------------------------------------------------------------

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
