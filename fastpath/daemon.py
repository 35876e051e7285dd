"""The fastpath process in kernel I/O mode: TUN on the clear side, UDP 4500 and raw ESP on the protected side.

One thread, one epoll.  Every wake-up drains whole batches:

- outbound: TUN -> ``kio_tun_read_vnet`` (TSO super-segments cut into packets in C; ``kio_tun_read``
  without offloads) -> ``kio_classify`` (SPD in C) -> sequence reservation -> ``engine.outbound`` ->
  ``kio_send_gso`` (sendmmsg; ESP-in-UDP on the NAT-T socket in UDP_SEGMENT runs, plain ESP and bypass
  traffic whole on IPPROTO_RAW) and ICMP errors back into the TUN;
- inbound: raw ESP + UDP 4500 -> ``kio_recv_raw4`` / ``kio_recv_udp4_gro`` (recvmmsg, UDP_GRO bundles
  split) -> ``engine.inbound`` -> ``kio_tun_write_vnet`` (in-order TCP runs coalesced into GSO writes).

Between batches: ``FastpathRegion.sync`` applies control's SA changes, counters and events are published
every 100 ms, packets held for an ACQUIRE are retried when the SPD or the SAs change, and the NAT-T
steering is checked (fastpath/io/sockets.py).  Python runs per batch, never per packet.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import time
from dataclasses import dataclass, field

import numpy as np

from control.config import Config
from fastpath import engines
from fastpath.batch import Batch
from fastpath.classify import Classifier, inner_mtu
from fastpath.io import kio
from fastpath.io.sockets import NattSocket, esp_socket, send_socket
from fastpath.io.tun import Tun, remote_routes
from fastpath.sa import Direction
from fastpath.shm import FastpathRegion, RegionError, params_to_sa
from fastpath.status import N_STATUS, Status

log = logging.getLogger("ipsecgw.fastpath")

PUBLISH_EVERY = 0.1      # seconds between counter/event publications
HOLD_TIMEOUT = 3.0       # held packets older than this are dropped
DRAIN_ROUNDS = 8         # batches per direction per wake-up, so neither direction starves the other
INBOUND_MTU = 9216       # receive slots take jumbo (or reassembled) outer packets


@dataclass
class Totals:
    verdicts: np.ndarray = field(default_factory=lambda: np.zeros(kio.V_MAX, dtype=np.uint64))
    inbound: np.ndarray = field(default_factory=lambda: np.zeros(N_STATUS, dtype=np.uint64))
    tun_in: int = 0
    tun_out: int = 0
    sent: int = 0
    send_failed: int = 0
    held_dropped: int = 0
    ike_misdirected: int = 0
    gro_dropped: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"tun_in": self.tun_in, "tun_out": self.tun_out, "sent": self.sent, "send_failed": self.send_failed,
                "held_dropped": self.held_dropped, "ike_misdirected": self.ike_misdirected,
                "gro_dropped": self.gro_dropped,
                "outbound": {kio.VERDICT_NAMES[i]: int(v) for i, v in enumerate(self.verdicts) if v},
                "inbound": {Status(i).label: int(v) for i, v in enumerate(self.inbound) if v and i in
                            Status._value2member_map_}}


def auto_tun_mtu(config: Config) -> int:
    """Outer MTU minus the largest ESP overhead any configured child may negotiate (UDP encapsulation
    counted, since NAT detection or the peer can turn it on)."""
    outer = config.gateway.fastpath.outer_mtu
    v6 = any(ipaddress.ip_address(a).version == 6 for c in config.connections.values() for a in c.local_addrs)
    ip = 40 if v6 else 20
    worst = outer
    for conn in config.connections.values():
        for child in conn.children:
            for prop in child.esp_proposals:
                aead = any(k in prop for k in ("gcm", "gmac", "chacha", "ccm"))
                iv, icv, blk = (8, 16, 4) if aead else (16, 32, 16)
                worst = min(worst, inner_mtu(outer, ip + 8 + 8 + iv + icv, blk))
    return worst if worst < outer else inner_mtu(outer, ip + 8 + 8 + 16 + 32, 16)


def tun_routes(config: Config) -> list[str]:
    nets = []
    for conn in config.connections.values():
        for child in conn.children:
            for ts in child.remote_ts:
                nets.extend(str(n) for n in ipaddress.summarize_address_range(ts.start, ts.end))
    return remote_routes(nets)


def wait_for_region(path: str, timeout: float) -> FastpathRegion:
    """Attach, waiting up to timeout seconds for control to create the region."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return FastpathRegion.attach(path)
        except RegionError as exc:
            missing = "No such file" in str(exc) or "magic is zero" in str(exc)
            if not missing or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Fastpath:
    def __init__(self, config: Config, region_timeout: float = 30.0):
        kio.need_lib()
        self.config = config
        gw = config.gateway
        fp = gw.fastpath
        self.fp = fp
        self.stop_requested = False
        self.totals = Totals()
        self.region = wait_for_region(gw.shm_path, region_timeout)
        try:
            self._setup(config)
        except BaseException:
            self.region.close()
            raise

    def _setup(self, config: Config) -> None:
        gw, fp = config.gateway, self.fp
        self.engine = engines.create(fp.engine, capacity=self.region.caps.n_sa)
        self.tun_mtu = fp.tun_mtu or auto_tun_mtu(config)
        self.offload = fp.offload
        self.tun = Tun(fp.tun, self.tun_mtu, fp.tun_addrs, tun_routes(config), vnet=self.offload)
        # offloads: TUN reads may be TCP super-segments (cut into packets in C), TUN writes coalesce TCP runs,
        # ESP-in-UDP leaves in UDP_SEGMENT runs and arrives in UDP_GRO bundles
        self.tun_rx = kio.TunRx() if self.offload else None
        self.tun_tx = kio.new_tun_tx()
        self.gro_scratch = kio.new_gro_scratch() if self.offload else None
        src4 = src6 = None
        for a in fp.tun_addrs:
            ip = ipaddress.ip_interface(a).ip
            if ip.version == 4 and src4 is None:
                src4 = str(ip)
            elif ip.version == 6 and src6 is None:
                src6 = str(ip)
        self.cls = Classifier(self.region, fp.outer_mtu, gw.ike_port, gw.natt_port, src4, src6)
        self.out = Batch(fp.batch, mtu=max(self.tun_mtu, 1280))
        self.inb = Batch(fp.batch, mtu=INBOUND_MTU)
        self.hold = Batch(max(fp.hold, 1), mtu=max(self.tun_mtu, 1280))
        self.kout, self.kin, self.khold = kio.KBatch(self.out), kio.KBatch(self.inb), kio.KBatch(self.hold)
        # Packets for an SA control installed after this loop's last sync (a rekey's new inbound SA, which
        # the peer may use as soon as our answer leaves) get a second look here instead of a drop.
        self.late = Batch(fp.batch, mtu=INBOUND_MTU)
        self.klate = kio.KBatch(self.late)
        self.synced_mid_loop = False
        self.v_out = np.zeros(fp.batch, dtype=np.uint8)
        self.v_hold = np.zeros(self.hold.capacity, dtype=np.uint8)
        self.hold_since = 0.0
        self.esp = esp_socket()
        self.raw = send_socket()
        local4 = sorted({a for c in config.connections.values() for a in c.local_addrs
                         if ipaddress.ip_address(a).version == 4})
        self.natt: list[NattSocket] = []
        for a in local4:
            try:
                self.natt.append(NattSocket(a, gw.natt_port, gro=self.offload))
            except OSError as exc:
                log.error("%s; ESP-in-UDP on %s is not received", exc.strerror, a)
        self.udp_fd = self.natt[0].fileno() if len(self.natt) == 1 else -1
        self.control_pid = -1
        self.ep = select.epoll()
        for fd in (self.tun.fileno(), self.esp.fileno(), *(s.fileno() for s in self.natt)):
            self.ep.register(fd, select.EPOLLIN)
        log.info("fastpath up: engine %s, TUN %s (MTU %d, routes %s, offloads %s), outer MTU %d, NAT-T %s, "
                 "region %s", self.engine.name, self.tun.name, self.tun_mtu, ", ".join(self.tun.routes) or "none",
                 "on" if self.offload else "off",
                 fp.outer_mtu, ", ".join(f"{s.local_ip}:{s.port}" for s in self.natt) or "none",
                 self.region.path)

    # -- SA changes ----------------------------------------------------------------------------

    def sync(self) -> bool:
        """Apply control's changes; True if held packets may now find an SA."""
        r = self.region.sync(self.engine)
        for slot in r.removed:
            self.cls.set_sa(slot, None)
        for slot in r.installed:
            cur = self.region.read_slot(slot)
            if cur is None:
                continue
            try:
                sa, direction = params_to_sa(cur.p)
            except ValueError:
                continue
            self.cls.set_sa(slot, sa if direction == Direction.OUT else None)
            log.info("SA slot %d installed: SPI 0x%08x %s, %s", slot, sa.spi, direction.name.lower(), sa.enc)
        for slot, why in r.rejected.items():
            log.warning("SA slot %d not installed: %s", slot, why)
        return bool(r.installed or r.spd_changed)

    def sync_now(self) -> bool:
        """sync() in the middle of a loop; held packets get their retry at the top of the next one."""
        if self.sync():
            self.synced_mid_loop = True
            return True
        return False

    # -- packets -------------------------------------------------------------------------------

    def _outbound(self, kb: kio.KBatch, n: int, verdict: np.ndarray, acquire: bool) -> None:
        b = kb.batch
        b.n = n
        protect = self.cls.classify(kb, n, verdict, acquire)
        if acquire and np.any(verdict[:n] == kio.V_ACQUIRE) and self.sync_now():
            # control bound these policies to SAs after this loop's sync (a rekey): take them, classify again
            protect = self.cls.classify(kb, n, verdict, acquire)
        v = verdict[:n]
        if protect:
            self.region.reserve_batch(b.sa, n)
            self.engine.outbound(b)
            v[(v == kio.V_PROTECT) & (b.status[:n] != 0)] = kio.V_DROPPED
            send = kb.send_gso if self.offload else kb.send
            sent, failed = send(self.raw.fileno(), n, verdict, kio.V_PROTECT, self.udp_fd,
                                self.config.gateway.natt_port)
            self.totals.sent += sent
            self.totals.send_failed += failed
        counts = np.bincount(v, minlength=kio.V_MAX)
        if counts[kio.V_BYPASS]:
            sent, failed = kb.send(self.raw.fileno(), n, verdict, kio.V_BYPASS)
            self.totals.sent += sent
            self.totals.send_failed += failed
        if counts[kio.V_ICMP]:
            self.totals.tun_out += self._tun_write(kb, n, verdict, kio.V_ICMP)
        if kb is self.kout:
            self.totals.verdicts += counts[:kio.V_MAX].astype(np.uint64)
            if counts[kio.V_ACQUIRE]:
                self._hold(n, verdict)

    def _hold(self, n: int, verdict: np.ndarray) -> None:
        if self.fp.hold == 0:
            self.totals.held_dropped += int(np.count_nonzero(verdict[:n] == kio.V_ACQUIRE))
            return
        if self.hold.n == 0:
            self.hold_since = time.monotonic()
        moved = self.kout.move_to(n, verdict, kio.V_ACQUIRE, self.khold, self.hold.n)
        self.totals.held_dropped += int(np.count_nonzero(verdict[:n] == kio.V_ACQUIRE)) - moved
        self.hold.n += moved

    def retry_held(self) -> None:
        n = self.hold.n
        if not n:
            return
        self._outbound(self.khold, n, self.v_hold, acquire=False)
        kept = self.khold.move_to(n, self.v_hold, kio.V_ACQUIRE, self.khold, 0)
        self.hold.n = kept
        if kept < n:
            log.debug("%d held packet(s) released", n - kept)

    def expire_held(self, now: float) -> None:
        if self.hold.n and now - self.hold_since > HOLD_TIMEOUT:
            self.totals.held_dropped += self.hold.n
            self.hold.n = 0

    def _tun_write(self, kb: kio.KBatch, n: int, sel: np.ndarray, want: int) -> int:
        if self.offload:
            return kb.tun_write_vnet(self.tun.fileno(), n, sel, want, self.tun_tx)
        return kb.tun_write(self.tun.fileno(), n, sel, want)

    def drain_tun(self) -> None:
        cap = self.out.capacity
        for _ in range(DRAIN_ROUNDS):
            if self.tun_rx is not None:
                n = self.kout.tun_read_vnet(self.tun.fileno(), self.tun_rx)
            else:
                n = self.kout.tun_read(self.tun.fileno())
            if n == 0:
                return
            self.totals.tun_in += n
            self._outbound(self.kout, n, self.v_out, acquire=True)
            if n < cap and not (self.tun_rx is not None and self.tun_rx.pending):
                return

    def drain_sockets(self, now: float) -> None:
        cap = self.inb.capacity
        for _ in range(DRAIN_ROUNDS):
            n = self.kin.recv_raw4(self.esp.fileno())
            for s in self.natt:
                if n >= cap:
                    break
                if s.gro:
                    got, ike, probe, dropped = self.kin.recv_udp4_gro(s.fileno(), s.local_packed, s.port,
                                                                      self.gro_scratch, start=n)
                    self.totals.gro_dropped += dropped
                else:
                    got, ike, probe = self.kin.recv_udp4(s.fileno(), s.local_packed, s.port, start=n)
                n += got
                if probe:
                    s.tick(probe, now)
                if ike:
                    self.totals.ike_misdirected += ike
                    if not s.probing:
                        s.probe(now)
            if n == 0:
                return
            self.inb.n = n
            self.engine.inbound(self.inb)
            st = self.inb.status[:n]
            self.totals.tun_out += self._tun_write(self.kin, n, self.inb.status, 0)
            late = self._inbound_late(n) if np.any(st == Status.NO_SA) and self.sync_now() else 0
            counts = np.bincount(st, minlength=N_STATUS)[:N_STATUS].astype(np.uint64)
            counts[Status.NO_SA] -= np.uint64(late)      # counted again by their second verdict
            self.totals.inbound += counts
            if n < cap - 64:       # a GRO receive stops short of a full batch when a bundle might not fit
                return

    def _inbound_late(self, n: int) -> int:
        """Run the batch's no-SA packets again after a sync picked up new SAs; returns how many, counted."""
        m = self.kin.move_to(n, self.inb.status, Status.NO_SA, self.klate, 0)
        if m:
            self.late.n = m
            self.engine.inbound(self.late)
            self.totals.tun_out += self._tun_write(self.klate, m, self.late.status, 0)
            self.totals.inbound += np.bincount(self.late.status[:m], minlength=N_STATUS)[:N_STATUS].astype(np.uint64)
        return m

    def _steering(self, now: float) -> None:
        pid = int(self.region.hdr.control_pid)
        if pid != self.control_pid:
            self.control_pid = pid
            for s in self.natt:
                s.probe(now)
        for s in self.natt:
            if s.tick(0, now):
                log.info("NAT-T steering on %s:%d re-attached: fastpath is reuseport index %d", s.local_ip,
                         s.port, s.index)

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> int:
        next_publish = 0.0
        while not self.stop_requested:
            probing = any(s.probing for s in self.natt)
            timeout = 0.02 if (probing or self.hold.n) else 0.05
            try:
                self.ep.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            if self.sync() or self.synced_mid_loop:
                self.synced_mid_loop = False
                self.retry_held()
            self.drain_tun()
            self.drain_sockets(now)
            self._steering(now)
            self.expire_held(now)
            if now >= next_publish:
                self.region.publish(self.engine)
                next_publish = now + PUBLISH_EVERY
        return 0

    def control_alive(self, within_s: float = 3.0) -> bool:
        hb = int(self.region.hdr.control_heartbeat_ns)
        return hb != 0 and self.cls._now() - hb < within_s * 1e9

    def close(self) -> None:
        """Clean exit: counters published, sessions dropped (engines zero keys), sockets closed, TUN removed
        unless control is still running."""
        try:
            self.region.publish(self.engine)
        except Exception:  # noqa: BLE001 - closing regardless
            log.exception("final publish failed")
        for slot in self.region.installed_slots():
            try:
                self.engine.remove_sa(slot)
            except Exception:  # noqa: BLE001 - the slot may not be in the engine
                pass
        self.engine.close()
        self.ep.close()
        for s in self.natt:
            s.close()
        self.esp.close()
        self.raw.close()
        # With control still alive its policies still say "protect": keep the persistent TUN and its routes
        # so that traffic is held back instead of leaving in the clear by the default route.
        keep = self.control_alive()
        self.tun.close(remove=not keep)
        if keep:
            log.info("control is still running: TUN %s kept (traffic for the remote selectors is dropped, not "
                     "leaked, until a fastpath runs again)", self.tun.name)
        self.region.close()
        done = self.totals.as_dict()
        if self.tun_rx is not None:
            done["tun_reads"] = self.tun_rx.counters()
        done["tun_writes"] = {"writes": int(self.tun_tx.writes), "packets": int(self.tun_tx.packets),
                              "failed": int(self.tun_tx.failed)}
        log.info("fastpath stopped: %s", done)

