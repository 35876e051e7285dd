"""The fastpath process in kernel I/O mode: TUN on the clear side, UDP 4500 and raw ESP on the protected side.

One thread, one epoll.  Every wake-up drains whole batches:

- outbound: TUN -> ``kio_tun_read_vnet`` (TSO super-segments cut into packets in C; ``kio_tun_read``
  without offloads) -> ``kio_classify`` (SPD in C) -> sequence reservation -> ``engine.outbound`` ->
  ``kio_send_gso`` (sendmmsg; ESP-in-UDP on the NAT-T socket in UDP_SEGMENT runs, plain ESP and bypass
  traffic whole on IPPROTO_RAW) and ICMP errors back into the TUN;
- inbound: raw ESP + UDP 4500 -> ``kio_recv_raw4`` / ``kio_recv_udp4_gro`` (recvmmsg, UDP_GRO bundles
  split) -> ``engine.inbound`` -> ``kio_tun_write_vnet`` (in-order TCP runs coalesced into GSO writes).
- outer IPv6: every protected-side socket has an AF_INET6 twin (``kio_recv_raw6`` rebuilds the IPv6 header
  the raw socket strips; ``kio_recv_udp6_gro``; sends pick the socket by the packet's IP version).
- AH (protocol 51): raw sockets of its own into the same inbound batches (``kio_recv_raw4``, and
  ``kio_recv_ah6``, which also puts back the extension headers AH's ICV covers); sent whole on IPPROTO_RAW.

Between batches: ``FastpathRegion.sync`` applies control's SA changes, counters and events are published
every 100 ms, packets held for an ACQUIRE are retried when the SPD or the SAs change, and the NAT-T
steering is checked (fastpath/io/sockets.py).  Python runs per batch, never per packet.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cdefs.sa import Direction
from fastpath import engines
from fastpath.batch import Batch
from fastpath.classify import Classifier
from fastpath.engines.base import Engine
from fastpath.io import kio
from fastpath.io.sockets import (
    IPPROTO_AH,
    NattSocket,
    esp_socket,
    ipv6_sockets,
    raw_socket4,
    raw_socket6,
    send_socket,
    single_fd,
)
from fastpath.io.tun import Tun
from fastpath.plan import FastpathPlan
from fastpath.region_sync import sync_region
from fastpath.shm import FastpathRegion, RegionError
from fastpath.status import N_STATUS, Status
from fastpath.totals import WRITE_EVERY, Totals, batch_bytes, read_status, write_status

if TYPE_CHECKING:
    from fastpath.io.afpacket import PacketPort

log = logging.getLogger("ipsecgw.fastpath")

PUBLISH_EVERY = 0.1      # seconds between counter/event publications
HOLD_TIMEOUT = 3.0       # held packets older than this are dropped
DRAIN_ROUNDS = 8         # batches per direction per wake-up, so neither direction starves the other
INBOUND_MTU = 9216       # receive slots take jumbo (or reassembled) outer packets


def _accept_local(dev: str) -> None:
    """ICMP errors the fastpath writes into the TUN come from the gateway's own address (the first of
    tun_addrs), which the kernel drops as a martian on input unless the device accepts local sources."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{dev}/accept_local", "w") as f:
            f.write("1")
    except OSError as exc:
        log.warning("cannot set accept_local on %s (ICMP errors from its own address may be dropped): %s", dev,
                    exc.strerror)


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


def pid_alive(pid: int) -> bool:
    """Whether process pid still exists (0: no process recorded)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_sessions(region: FastpathRegion, engine: Engine) -> None:
    """On exit (kernel or DPDK I/O): every installed slot's session out of engine, so engines zero its keys."""
    for slot in region.installed_slots():
        try:
            engine.remove_sa(slot)
        except Exception:  # noqa: BLE001 - the slot may not be in the engine
            pass


def serve_until_signal(make: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> int:
    """Build a fastpath (kernel or DPDK I/O) with ``make``, run it until SIGTERM/SIGINT and close it; exit
    code 1, logged, when it cannot start for one of ``errors``."""
    try:
        fp = make()
    except errors as exc:
        log.error("cannot start: %s", exc)
        return 1

    def stop(signum: int, frame: object) -> None:
        fp.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return fp.run()
    finally:
        fp.close()


class Fastpath:
    def __init__(self, plan: FastpathPlan, region_timeout: float = 30.0):
        kio.need_lib()
        self.plan = plan
        fp = plan.settings
        self.fp = fp
        self.stop_requested = False
        self.totals = Totals()
        self.region = wait_for_region(plan.shm_path, region_timeout)
        self.started = time.time()
        prev = read_status(self.region.path) if int(self.region.hdr.fastpath_attaches) > 1 else None
        if prev is not None:           # a restart on the same region: the gateway totals carry on
            self.totals.restore(prev["totals"])
        try:
            self._setup(plan)
        except BaseException:
            self.region.close()
            raise

    def _setup(self, plan: FastpathPlan) -> None:
        fp = self.fp
        self.engine = engines.create(fp.engine, capacity=self.region.caps.n_sa)
        self.offload = fp.offload
        # clear side: a TUN, or an existing interface through AF_PACKET (fastpath/io/afpacket.py), which is
        # read like a TUN with a vnet header (always: a host's TSO super-segments arrive whole) and written
        # with its own sendmmsg to neighbour MACs (in-order TCP coalesced into GSO frames with offload)
        self.afp: PacketPort | None = None
        if fp.clear == "af_packet":
            from fastpath.io.afpacket import PacketPort, status_path

            self.afp = PacketPort(fp.clear_interface, list(plan.routes), vnet=self.offload, hold=fp.hold,
                                  status_file=status_path(plan.shm_path))
            self.tun_mtu = self.afp.mtu
            self.tun: Tun | PacketPort = self.afp
            log.info("clear side: AF_PACKET on %s (MTU %d, MAC %s, %d neighbour(s) known), blackhole routes %s",
                     self.afp.name, self.afp.mtu, self.afp.mac, len(self.afp.known),
                     ", ".join(self.afp.routes) or "none")
        else:
            self.tun_mtu = plan.tun_mtu
            self.tun = Tun(fp.tun, self.tun_mtu, fp.tun_addrs, list(plan.routes), vnet=self.offload)
            _accept_local(fp.tun)
        # offloads: TUN reads may be TCP super-segments (cut into packets in C), TUN writes coalesce TCP runs,
        # ESP-in-UDP leaves in UDP_SEGMENT runs and arrives in UDP_GRO bundles
        self.tun_rx = kio.TunRx() if self.offload or self.afp is not None else None
        self.tun_tx = kio.new_tun_tx()
        self.gro_scratch = kio.new_gro_scratch() if self.offload else None
        src4 = src6 = None
        for a in (self.afp.addresses if self.afp is not None else fp.tun_addrs):
            ip = ipaddress.ip_interface(a).ip
            if ip.version == 4 and src4 is None:
                src4 = str(ip)
            elif ip.version == 6 and src6 is None:
                src6 = str(ip)
        self.cls = Classifier(self.region, fp.outer_mtu, plan.ike_port, plan.natt_port, src4, src6, fragment=True)
        # too-big IPv4 without DF: cut into inner fragments here, each its own ESP packet (cdefs/kio/kio_frag.c)
        self.frag = Batch(fp.batch, mtu=max(fp.outer_mtu, 1280))
        self.kfrag = kio.KBatch(self.frag)
        self.v_frag = np.zeros(fp.batch, dtype=np.uint8)
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
        # outer IPv6: ESP on its own raw socket (headers rebuilt in C), IPv6 packets leave on AF_INET6 IPPROTO_RAW
        self.esp6, self.raw6 = ipv6_sockets(plan.ipv6_outer)
        self.raw6_fd = self.raw6.fileno() if self.raw6 is not None else -1
        # AH (protocol 51) on raw sockets of its own, into the same inbound batches as ESP: the engine tells
        # the two apart by the IP protocol.  Never in UDP: RFC 3948 encapsulates ESP only.
        self.ah = raw_socket4(IPPROTO_AH)
        self.ah6 = raw_socket6(IPPROTO_AH) if self.esp6 is not None else None
        self.natt: list[NattSocket] = []
        for a in plan.local_addrs:
            try:
                self.natt.append(NattSocket(a, plan.natt_port, gro=self.offload))
            except OSError as exc:
                log.error("%s; ESP-in-UDP on %s is not received", exc.strerror, a)
        self.udp_fd, self.udp6_fd = single_fd(self.natt, False), single_fd(self.natt, True)
        self.control_pid = -1
        self.ep = select.epoll()
        for fd in (self.tun.fileno(), self.esp.fileno(), self.ah.fileno(), *(s.fileno() for s in self.natt),
                   *(s6.fileno() for s6 in (self.esp6, self.ah6) if s6 is not None)):
            self.ep.register(fd, select.EPOLLIN)
        log.info("fastpath up: engine %s, TUN %s (MTU %d, routes %s, offloads %s), outer MTU %d, NAT-T %s, "
                 "region %s", self.engine.name, self.tun.name, self.tun_mtu, ", ".join(self.tun.routes) or "none",
                 "on" if self.offload else "off",
                 fp.outer_mtu, ", ".join(f"{s.local_ip}:{s.port}" for s in self.natt) or "none",
                 self.region.path)

    # -- SA changes ----------------------------------------------------------------------------

    def sync(self) -> bool:
        """Apply control's changes; True if held packets may now find an SA."""
        r = sync_region(self.region, self.engine,
                        lambda slot, sa, d: self.cls.set_sa(slot, sa if d == Direction.OUT else None))
        self.totals.sa_refused += len(r.rejected)
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
        if self.cls.c.to_fragment:
            self._fragments(kb, n, verdict)        # before the engine: those packets still carry their SA
        if protect:
            self.region.reserve_batch(b.sa, n)
            self.engine.outbound(b)
            v[(v == kio.V_PROTECT) & (b.status[:n] != 0)] = kio.V_DROPPED
            self._send_esp(kb, n, verdict)
        counts = np.bincount(v, minlength=kio.V_MAX)
        if counts[kio.V_BYPASS] and self.afp is None:     # AF_PACKET: the kernel forwards its own copy
            sent, failed = kb.send(self.raw.fileno(), n, verdict, kio.V_BYPASS, raw6_fd=self.raw6_fd)
            self.totals.sent += sent
            self.totals.send_failed += failed
        if counts[kio.V_ICMP]:
            self.totals.tun_out += self._tun_write(kb, n, verdict, kio.V_ICMP)
        if kb is self.kout:
            self.totals.verdicts += counts[:kio.V_MAX].astype(np.uint64)
            if counts[kio.V_ACQUIRE]:
                self._hold(n, verdict)
        else:                  # held packets: counted as acquire when held, now by what became of them
            counts[kio.V_ACQUIRE] = 0
            self.totals.verdicts += counts[:kio.V_MAX].astype(np.uint64)

    def _send_esp(self, kb: kio.KBatch, n: int, verdict: np.ndarray) -> None:
        send = kb.send_gso if self.offload else kb.send
        sent, failed = send(self.raw.fileno(), n, verdict, kio.V_PROTECT, self.udp_fd,
                            self.plan.natt_port, raw6_fd=self.raw6_fd, udp6_fd=self.udp6_fd)
        self.totals.sent += sent
        self.totals.send_failed += failed
        self.totals.esp_out_bytes += batch_bytes(kb, n, verdict, kio.V_PROTECT)

    def _fragments(self, kb: kio.KBatch, n: int, verdict: np.ndarray) -> None:
        """Too-big IPv4 packets without DF become inner fragments, each encrypted and sent as its own ESP
        packet (RFC 4459 3.): the outer packet never fragments.  One C call fills the fragment batch."""
        cursor = 0
        while cursor < n:
            m, cursor = self.cls.fragment(kb, n, verdict, self.kfrag, cursor)
            if not m:
                break
            self.region.reserve_batch(self.frag.sa, m)
            self.engine.outbound(self.frag)
            self.v_frag[:m] = np.where(self.frag.status[:m] == 0, kio.V_PROTECT, kio.V_DROPPED)
            self.totals.fragments += m
            self._send_esp(self.kfrag, m, self.v_frag)

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
        if self.afp is not None:
            return self.afp.write(kb, n, sel, want)
        if self.offload:
            return kb.tun_write_vnet(self.tun.fileno(), n, sel, want, self.tun_tx)
        return kb.tun_write(self.tun.fileno(), n, sel, want)

    def drain_tun(self) -> None:
        cap = self.out.capacity
        for _ in range(DRAIN_ROUNDS):
            if self.afp is not None:
                n = self.afp.read(self.kout, self.tun_rx)
            elif self.tun_rx is not None:
                n = self.kout.tun_read_vnet(self.tun.fileno(), self.tun_rx)
            else:
                n = self.kout.tun_read(self.tun.fileno())
            if n == 0:
                return
            self.totals.tun_in += n
            self.totals.tun_in_bytes += batch_bytes(self.kout, n)
            self._outbound(self.kout, n, self.v_out, acquire=True)
            if n < cap and not (self.tun_rx is not None and self.tun_rx.pending):
                return

    def drain_sockets(self, now: float) -> None:
        cap = self.inb.capacity
        for _ in range(DRAIN_ROUNDS):
            n = self.kin.recv_raw4(self.esp.fileno())
            if self.esp6 is not None and n < cap:
                n += self.kin.recv_raw6(self.esp6.fileno(), start=n)
            if n < cap:
                n += self.kin.recv_raw4(self.ah.fileno(), start=n)
            if self.ah6 is not None and n < cap:
                got, left_out = self.kin.recv_ah6(self.ah6.fileno(), start=n)
                n += got
                self.totals.ah6_unrebuilt += left_out
            for s in self.natt:
                if n >= cap:
                    break
                if s.gro:
                    got, ike, probe, dropped = self.kin.recv_udp_gro(s.fileno(), s.local_packed, s.port,
                                                                      self.gro_scratch, start=n)
                    self.totals.gro_dropped += dropped
                else:
                    got, ike, probe = self.kin.recv_udp(s.fileno(), s.local_packed, s.port, start=n)
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
            self.totals.esp_in += n
            self.totals.esp_in_bytes += batch_bytes(self.kin, n)
            self.engine.inbound(self.inb)
            st = self.inb.status[:n]
            self.totals.tun_out_bytes += batch_bytes(self.kin, n, self.inb.status, 0)   # before coalescing
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
            self.totals.tun_out_bytes += batch_bytes(self.klate, m, self.late.status, 0)
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
        next_publish = next_status = 0.0
        while not self.stop_requested:
            probing = any(s.probing for s in self.natt)
            timeout = 0.02 if (probing or self.hold.n or (self.afp is not None and self.afp.busy)) else 0.05
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
            if self.afp is not None:
                self.afp.tick(now)
            if now >= next_publish:
                self.region.publish(self.engine)
                next_publish = now + PUBLISH_EVERY
                if self.afp is not None:
                    self._publish_clear(now)
                if now >= next_status:
                    write_status(self.region.path, self.totals, self.started)
                    next_status = now + WRITE_EVERY
        return 0

    def _publish_clear(self, now: float) -> None:
        """The AF_PACKET clear side's counters for `ipsecgw status` (fastpath/io/afpacket.py)."""
        assert self.afp is not None and self.tun_rx is not None
        rx = self.tun_rx.counters()
        self.afp.publish(now, rx_packets=self.totals.tun_in, rx_reads=rx["reads"], rx_gso_reads=rx["gso_reads"],
                         rx_bad=rx["bad"], delivered=self.totals.tun_out,
                         icmp_too_big=int(self.totals.verdicts[kio.V_ICMP]))

    def control_alive(self, within_s: float = 3.0) -> bool:
        hb = int(self.region.hdr.control_heartbeat_ns)
        return hb != 0 and self.cls._now() - hb < within_s * 1e9

    def close(self) -> None:
        """Clean exit: counters published, sessions dropped (engines zero keys), sockets closed, TUN removed
        unless control is still running."""
        try:
            self.region.publish(self.engine)
            write_status(self.region.path, self.totals, self.started)
        except Exception:  # noqa: BLE001 - closing regardless
            log.exception("final publish failed")
        drop_sessions(self.region, self.engine)
        self.engine.close()
        self.ep.close()
        for s in self.natt:
            s.close()
        self.esp.close()
        self.ah.close()
        self.raw.close()
        for s6 in (self.esp6, self.ah6, self.raw6):
            if s6 is not None:
                s6.close()
        # With control still alive its policies still say "protect": keep the persistent TUN and its routes
        # so that traffic is held back instead of leaving in the clear by the default route.
        keep = self.control_alive()
        if keep and self.afp is not None:
            # a supervisor's clean stop ends control just before us (its heartbeat is still fresh): then the
            # blackhole routes go, since nothing else would remove them (a TUN is deleted by the supervisor)
            keep = pid_alive(int(self.region.hdr.control_pid))
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
        if self.afp is not None:
            done["af_packet"] = self.afp.counters()
        log.info("fastpath stopped: %s", done)

