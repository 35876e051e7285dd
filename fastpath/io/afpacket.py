"""The clear side through AF_PACKET on an existing interface (``gateway.fastpath.clear: af_packet``).

Instead of a TUN, the fastpath takes the protected traffic straight off the LAN-facing interface and puts
decrypted traffic back on it.  ``PacketPort`` offers what the daemon uses of ``fastpath.io.tun.Tun``
(``name``, ``mtu``, ``routes``, ``fileno()``, ``close(remove)``) plus ``write`` and ``tick``.

- **Receive.**  A SOCK_RAW packet socket bound to the interface with PACKET_VNET_HDR: each read gives a
  ``struct virtio_net_hdr``, the Ethernet header and the IP packet, a TCP super-segment (the host's TSO
  over veth, the NIC's GRO) whole.  ``kio_pkt_read`` reads the Ethernet header aside, so the buffer is
  byte for byte what a TUN with IFF_VNET_HDR gives, and the TUN's segmentation cuts it into packets in C.
  A VLAN is handled by naming its sub-interface (the kernel takes the tag off there).  A classic-BPF
  filter keeps only untagged IPv4/IPv6 frames addressed to this host's MAC (PACKET_HOST): no broadcast,
  no ARP, and not our own transmissions, which every ETH_P_ALL socket would otherwise see again as
  PACKET_OUTGOING.
- **The kernel's copy.**  A packet socket only taps: the kernel still receives the frame and would route
  it, so protected traffic would leave both encrypted (by us) and in the clear (by the kernel's
  forwarding).  The remote traffic selectors are therefore routed to ``blackhole``: the kernel drops its
  copy silently (no ICMP), while BYPASS traffic and traffic without a policy are forwarded by the kernel
  as usual and are not our business.  The routes stay while control is running (as the TUN does), so a
  crashed fastpath leaves the protected traffic dropped, never leaked; a clean stop removes them.
  Traffic the gateway itself originates towards the remote selectors hits the same blackhole: in this
  mode only forwarded traffic is protected.
- **Transmit.**  sendmmsg on a second packet socket.  With offloads it is SOCK_RAW with PACKET_VNET_HDR:
  the Ethernet header is written in C, and in-order TCP segments of one flow leave as one GSO frame (the
  runs the TUN write coalesces), so the LAN host's TCP sees super-segments and acknowledges them as
  such instead of sending an ACK through the tunnel for every other segment; without offloads it is
  SOCK_DGRAM and the kernel writes the header.  The destination MAC comes from a small
  C table (inner destination -> MAC) filled here from the kernel's neighbour table, through netlink:
  RTM_GETROUTE finds the next hop (the destination itself on the link, or its gateway), RTM_GETNEIGH its
  MAC.  A destination with no usable entry makes the kernel resolve it (RTM_NEWNEIGH with NTF_USE, as
  ``ip neigh ... use``), and its packets wait in a small hold batch for up to ``HOLD_TIMEOUT``; then they
  are dropped and counted (``no_neighbour_dropped``).  Every ``REFRESH_EVERY`` seconds the table is
  checked against the kernel's, and entries we used that went STALE are re-confirmed the same way, so a
  host that moved or changed its MAC is followed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from typing import Any

from fastpath import status_file as status_files
from fastpath.batch import Batch
from fastpath.io import kio

log = logging.getLogger("ipsecgw.fastpath")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SOCK_BUF = 8 << 20
PACKET_HOST = 0
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_AD_VLAN_TAG_PRESENT = 48

HOLD_TIMEOUT = 1.0       # seconds a packet waits for its neighbour
REFRESH_EVERY = 5.0      # seconds between checks of the MAC table against the kernel's neighbour table
UNREACHABLE_FOR = 1.0    # a destination not routed out of this interface is not looked up again sooner
NEIGH_CAPACITY = 4096    # destinations in the C table (3/4 of it usable)
MISS_MAX = 64            # distinct missing destinations reported per send
STATUS_EVERY = 1.0       # seconds between writes of the counters file that `ipsecgw status` reads

# netlink (rtnetlink) constants
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETROUTE, RTM_NEWROUTE, RTM_NEWNEIGH, RTM_GETNEIGH = 26, 24, 28, 30
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
NDA_DST, NDA_LLADDR = 1, 2
RTN_UNICAST = 1
NTF_USE = 0x01
NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80     # REACHABLE STALE DELAY PROBE NOARP PERMANENT
NUD_STALE = 0x04


class PacketError(OSError):
    """The interface cannot be used; the message names it and the step that failed (an OSError, so
    `ipsecgw fastpath` reports it as a start-up failure, exit code 1)."""


# -- the receive filter ------------------------------------------------------------------------------

_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


def rx_filter() -> bytes:
    """cBPF for the receive socket: IPv4/IPv6 frames for this host (PACKET_HOST) pass whole, nothing else."""
    insns = [
        (_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (_JEQ_K, 0, 5, PACKET_HOST),                    # not for us (outgoing, broadcast, other host) -> drop
        (_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF),
        (_JEQ_K, 0, 3, 0),                              # 802.1Q-tagged: for a VLAN sub-interface -> drop
        (_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PROTOCOL) & 0xFFFFFFFF),
        (_JEQ_K, 2, 0, 0x0800),                         # IPv4 -> accept
        (_JEQ_K, 1, 0, 0x86DD),                         # IPv6 -> accept
        (_RET_K, 0, 0, 0),
        (_RET_K, 0, 0, 0xFFFFFFFF),
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def _attach_filter(sock: socket.socket, prog: bytes) -> None:
    import ctypes

    buf = ctypes.create_string_buffer(prog)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("H6xQ", len(prog) // 8, ctypes.addressof(buf)))


# -- rtnetlink: routes and neighbours -----------------------------------------------------------------

def _attrs(data: bytes, off: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= len(data):
        ln, typ = struct.unpack_from("=HH", data, off)
        if ln < 4:
            break
        out[typ & 0x3FFF] = data[off + 4:off + ln]
        off += (ln + 3) & ~3
    return out


def _attr(typ: int, value: bytes) -> bytes:
    ln = 4 + len(value)
    return struct.pack("=HH", ln, typ) + value + b"\0" * (((ln + 3) & ~3) - ln)


class Netlink:
    """A NETLINK_ROUTE socket for the few questions the transmit side asks (not on the packet path:
    only when a destination is new, and every few seconds)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.settimeout(1.0)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _ask(self, typ: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; the (type, message) answers up to DONE, an error or the single reply."""
        self.seq += 1
        seq = self.seq
        self.sock.send(struct.pack("=IHHII", 16 + len(body), typ, flags | NLM_F_REQUEST, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _fl, mseq, _pid = struct.unpack_from("=IHHII", data, off)
                if ln < 16:
                    return out
                msg = data[off:off + ln]
                off += (ln + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = struct.unpack_from("=i", msg, 16)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return out
                out.append((mtype, msg))
                if not flags & NLM_F_DUMP:
                    return out

    def route(self, family: int, addr: bytes) -> tuple[int, int, bytes | None]:
        """(route type, output ifindex, gateway address or None) the kernel would use for addr."""
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        body = struct.pack("=BBBBBBBBI", af, len(addr) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, addr)
        try:
            ans = self._ask(RTM_GETROUTE, 0, body)
        except OSError:
            return 0, 0, None
        for mtype, msg in ans:
            if mtype != RTM_NEWROUTE:
                continue
            rtype = msg[16 + 7]
            a = _attrs(msg, 16 + 12)
            oif = struct.unpack("=i", a[RTA_OIF])[0] if RTA_OIF in a else 0
            return rtype, oif, a.get(RTA_GATEWAY)
        return 0, 0, None

    def neighbours(self, ifindex: int) -> dict[tuple[int, bytes], tuple[bytes, int]]:
        """The kernel's neighbour entries on ifindex: (family, address) -> (MAC, NUD state)."""
        out: dict[tuple[int, bytes], tuple[bytes, int]] = {}
        body = struct.pack("=BxxxiHBB", socket.AF_UNSPEC, 0, 0, 0, 0)
        for mtype, msg in self._ask(RTM_GETNEIGH, NLM_F_DUMP, body):
            if mtype != RTM_NEWNEIGH:
                continue
            af, idx, state, _flags, _typ = struct.unpack_from("=BxxxiHBB", msg, 16)
            if idx != ifindex:
                continue
            a = _attrs(msg, 16 + 12)
            if NDA_DST in a and NDA_LLADDR in a and len(a[NDA_LLADDR]) == 6:
                out[(4 if af == socket.AF_INET else 6, a[NDA_DST])] = (a[NDA_LLADDR], state)
        return out

    def resolve(self, ifindex: int, family: int, addr: bytes) -> bool:
        """Make the kernel resolve addr on ifindex (or re-confirm a STALE entry): RTM_NEWNEIGH with NTF_USE."""
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        body = struct.pack("=BxxxiHBB", af, ifindex, 0, NTF_USE, 0) + _attr(NDA_DST, addr)
        try:
            self._ask(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_ACK, body)
            return True
        except OSError:
            return False


# -- the interface ------------------------------------------------------------------------------------

def _ip_json(*args: str) -> Any:
    r = subprocess.run(["ip", "-j", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise PacketError(f"ip {' '.join(args)}: {r.stderr.strip() or 'failed'}")
    return json.loads(r.stdout or "[]")


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    return "" if r.returncode == 0 else (r.stderr.strip() or "failed")


def status_path(shm_path: str) -> str:
    """Where the fastpath leaves the clear side's counters for control's ``status`` (beside the region)."""
    return status_files.status_path(shm_path, "clear")


def read_status(shm_path: str) -> dict[str, Any] | None:
    """The counters the fastpath last wrote (None when there is no AF_PACKET fastpath, or a torn read)."""
    return status_files.read_json(status_path(shm_path))


def _key(family: int, addr: bytes) -> bytes:
    return bytes([family]) + addr + bytes(16 - len(addr))


class PacketPort:
    """The clear side on interface ``name`` through AF_PACKET; see the module docstring."""

    def __init__(self, name: str, routes: Iterable[str] = (), vnet: bool = True, hold: int = 64,
                 status_file: str | None = None):
        kio.need_lib()
        self.name = name
        try:
            self.ifindex = socket.if_nametoindex(name)
        except OSError:
            raise PacketError(f"clear_interface {name}: no such interface") from None
        info = _ip_json("addr", "show", "dev", name)
        if not info:
            raise PacketError(f"clear_interface {name}: no such interface")
        self.mtu = int(info[0].get("mtu", 1500))
        self.mac = info[0].get("address", "")
        if info[0].get("link_type") not in ("ether", None):
            raise PacketError(f"clear_interface {name}: expected an Ethernet interface, got link type "
                              f"{info[0].get('link_type')}")
        self.addresses = [f"{a['local']}/{a['prefixlen']}" for a in info[0].get("addr_info", [])
                          if a.get("scope") != "link"]
        self.vnet = vnet
        self.mac_bytes = bytes.fromhex(self.mac.replace(":", "")) if self.mac else bytes(6)
        self.rx = self._rx_socket()
        try:
            self.tx = self._tx_socket(vnet)
        except PacketError:
            self.rx.close()
            raise
        self.nl = Netlink()
        self.routes: list[str] = []
        for r in routes:
            net = ipaddress.ip_network(r, strict=False)
            err = _ip("-6" if net.version == 6 else "-4", "route", "replace", "blackhole", str(net))
            if err:
                self.close(remove=True)
                raise PacketError(f"ip route replace blackhole {net}: {err}")
            self.routes.append(str(net))
        # the C side: MAC table, transmit counters, missing addresses, the per-packet miss marks
        ffi = kio.ffi
        self._nkey = ffi.new("uint8_t[]", NEIGH_CAPACITY * 17)
        self._nmac = ffi.new("uint8_t[]", NEIGH_CAPACITY * 6)
        self._nhit = ffi.new("uint8_t[]", NEIGH_CAPACITY)
        self.table = ffi.new("struct kio_neigh *", {"cap": NEIGH_CAPACITY, "key": self._nkey, "mac": self._nmac,
                                                    "hit": self._nhit})
        self._miss_addr = ffi.new("uint8_t[]", MISS_MAX * 17)
        self.txc = ffi.new("struct kio_pkt_tx *", {"miss_addr": self._miss_addr, "miss_max": MISS_MAX})
        self.known: dict[bytes, tuple[bytes, bytes]] = {}     # destination key -> (next-hop key, MAC)
        self.pending: dict[bytes, float] = {}                 # destination key -> when resolution started
        self.unreachable: dict[bytes, float] = {}             # destination key -> when to look again
        self.hold = Batch(max(hold, 1), mtu=max(self.mtu, 1280))
        self.khold = kio.KBatch(self.hold)
        self.hold_cap = hold
        self.hold_since = 0.0
        self._miss = bytearray(0)
        self._zero = bytearray(self.hold.capacity)
        self.next_refresh = time.monotonic() + REFRESH_EVERY
        self.held = self.hold_dropped = self.resolutions = 0
        self.status_file = status_file
        self.next_status = 0.0
        self._prime()

    def _rx_socket(self) -> socket.socket:
        # protocol 0 until the filter is in place, so no frame is queued unfiltered; the vnet header always,
        # since a TSO/GRO super-segment without it would arrive as one oversized packet
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(s, rx_filter())
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCK_BUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
            s.bind((self.name, ETH_P_ALL))
            s.setblocking(False)
        except OSError as exc:
            s.close()
            raise PacketError(f"clear_interface {self.name}: packet socket: {exc.strerror}") from None
        return s

    def _tx_socket(self, vnet: bool) -> socket.socket:
        """Protocol 0: it receives nothing.  vnet: SOCK_RAW with PACKET_VNET_HDR (the kernel offers the vnet
        header on SOCK_RAW only), so TCP runs leave as GSO super-segments; else SOCK_DGRAM, one per packet."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW if vnet else socket.SOCK_DGRAM, 0)
        try:
            if vnet:
                s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCK_BUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            s.bind((self.name, 0))
        except OSError as exc:
            s.close()
            raise PacketError(f"clear_interface {self.name}: packet socket: {exc.strerror}") from None
        return s

    def fileno(self) -> int:
        return self.rx.fileno()

    def read(self, kb: kio.KBatch, rx: kio.TunRx, start: int = 0, limit: int | None = None) -> int:
        """Packets (TCP super-segments cut in C) into slots start..; see kio_pkt_read."""
        n = kio.lib.kio_pkt_read(self.rx.fileno(), kb.c, start, kb.batch.capacity if limit is None else limit,
                                 rx.c)
        if n < 0:
            raise OSError(-n, f"{self.name}: packet socket read failed")
        return n

    # -- neighbours ------------------------------------------------------------------------------------

    def _prime(self) -> None:
        """Start with the kernel's neighbours on the interface: the hosts the gateway already talks to."""
        for (fam, addr), (mac, state) in self.nl.neighbours(self.ifindex).items():
            if state & NUD_USABLE:
                k = _key(fam, addr)
                self.known[k] = (k, mac)
        self._load_table()

    def _load_table(self) -> None:
        lib = kio.lib
        lib.kio_neigh_clear(self.table)
        for k, (_nh, mac) in list(self.known.items()):
            if lib.kio_neigh_put(self.table, k[0], k[1:], mac) != 0:
                del self.known[k]            # full: the rest is resolved again when used

    def _resolve(self, keys: Iterable[bytes], now: float, retry: bool = False) -> bool:
        """Look destinations up (route, then neighbour); True if the C table gained entries.  A destination
        already being resolved is looked at again only on the retry between batches, so a burst of packets
        to hosts that do not answer costs no netlink round trips per batch."""
        neigh = None
        added = False
        for k in keys:
            if k in self.known or self.unreachable.get(k, 0.0) > now or (k in self.pending and not retry):
                continue
            fam = k[0]
            addr = k[1:5] if fam == 4 else k[1:17]
            rtype, oif, gw = self.nl.route(fam, addr)
            if rtype != RTN_UNICAST or oif != self.ifindex:
                self.unreachable[k] = now + UNREACHABLE_FOR
                self.pending.pop(k, None)
                continue
            nh = _key(fam, gw if gw else addr)
            if neigh is None:
                neigh = self.nl.neighbours(self.ifindex)
            ent = neigh.get((fam, nh[1:5] if fam == 4 else nh[1:17]))
            if ent is not None and ent[1] & NUD_USABLE:
                self.known[k] = (nh, ent[0])
                self.pending.pop(k, None)
                if kio.lib.kio_neigh_put(self.table, fam, addr, ent[0]) == 0:
                    added = True
                continue
            if k not in self.pending:
                self.pending[k] = now
                self.resolutions += 1
                self.nl.resolve(self.ifindex, fam, nh[1:5] if fam == 4 else nh[1:17])
        return added

    def refresh(self, now: float) -> None:
        """Follow the kernel's neighbour table: changed MACs, entries gone, STALE entries we use."""
        self.next_refresh = now + REFRESH_EVERY
        neigh = self.nl.neighbours(self.ifindex)
        hit = bytes(kio.ffi.buffer(self._nhit, NEIGH_CAPACITY))
        used = {bytes(kio.ffi.buffer(self._nkey + i * 17, 17)) for i, h in enumerate(hit) if h}
        changed = False
        for k, (nh, mac) in list(self.known.items()):
            fam = nh[0]
            ent = neigh.get((fam, nh[1:5] if fam == 4 else nh[1:17]))
            if ent is None or not ent[1] & NUD_USABLE:
                del self.known[k]
                changed = True
                continue
            if ent[0] != mac:
                self.known[k] = (nh, ent[0])
                changed = True
            if ent[1] & NUD_STALE and k in used:
                self.nl.resolve(self.ifindex, fam, nh[1:5] if fam == 4 else nh[1:17])
        self.unreachable = {k: t for k, t in self.unreachable.items() if t > now}
        if changed:
            self._load_table()
        else:
            kio.ffi.memmove(self._nhit, bytes(NEIGH_CAPACITY), NEIGH_CAPACITY)

    # -- packets ---------------------------------------------------------------------------------------

    def write(self, kb: kio.KBatch, n: int, sel: Any, want: int) -> int:
        """Send packets i < n with sel[i] == want; those with no neighbour yet go to the hold batch."""
        if len(self._miss) < n:
            self._miss = bytearray(max(n, kb.batch.capacity))
        miss = kio.ffi.from_buffer(self._miss)
        sent = kio.lib.kio_pkt_send(self.tx.fileno(), self.ifindex, kb.c, n, kio.ffi.from_buffer(sel), want,
                                    self.table, self.mtu, miss, self.txc, self.vnet, self.mac_bytes)
        if self.txc.n_miss:
            now = time.monotonic()
            keys = [bytes(kio.ffi.buffer(self._miss_addr + i * 17, 17)) for i in range(self.txc.n_miss)]
            if self._resolve(keys, now):
                # the kernel knew them (a host that appeared since the last refresh): send them now
                again = bytes(self._miss[:n])
                sent += kio.lib.kio_pkt_send(self.tx.fileno(), self.ifindex, kb.c, n, again, 1, self.table,
                                             self.mtu, miss, self.txc, self.vnet, self.mac_bytes)
            if kb is not self.khold and self.txc.n_miss:
                self._hold(kb, n, now)
        return sent

    def _hold(self, kb: kio.KBatch, n: int, now: float) -> None:
        misses = self._miss.count(1, 0, n)
        if self.hold_cap == 0:
            self.hold_dropped += misses
            return
        if self.hold.n == 0:
            self.hold_since = now
        moved = kb.move_to(n, self._miss, 1, self.khold, self.hold.n)
        self.hold.n += moved
        self.held += moved
        self.hold_dropped += misses - moved

    def tick(self, now: float) -> None:
        """Between batches: retry held packets as neighbours resolve, drop them after HOLD_TIMEOUT,
        refresh the table every REFRESH_EVERY seconds."""
        if self.hold.n:
            if self.pending:
                self._resolve(list(self.pending), now, retry=True)
            n = self.hold.n
            self.write(self.khold, n, self._zero, 0)
            kept = self.khold.move_to(n, self._miss, 1, self.khold, 0)
            self.hold.n = kept
            if kept and now - self.hold_since > HOLD_TIMEOUT:
                self.hold_dropped += kept
                self.hold.n = 0
        if self.pending:
            self.pending = {k: t for k, t in self.pending.items() if now - t < HOLD_TIMEOUT}
        if now >= self.next_refresh:
            self.refresh(now)

    @property
    def busy(self) -> bool:
        """Packets are waiting for a neighbour (the loop should wake up soon)."""
        return self.hold.n > 0

    def counters(self) -> dict[str, int]:
        t = self.txc
        return {"tx_packets": int(t.packets), "tx_frames": int(t.frames), "tx_calls": int(t.calls),
                "tx_failed": int(t.failed),
                "too_big": int(t.too_big), "no_neighbour": int(t.no_neigh), "held": self.held,
                "no_neighbour_dropped": self.hold_dropped, "resolutions": self.resolutions,
                "neighbours": len(self.known)}

    def publish(self, now: float, **extra: Any) -> None:
        """Write the counters (and the daemon's extra ones: receive side, ICMP) for `ipsecgw status`, at most
        every STATUS_EVERY seconds; written to a temporary file and renamed, so a reader sees a whole one."""
        if self.status_file is None or now < self.next_status:
            return
        self.next_status = now + STATUS_EVERY
        data = {"interface": self.name, "ifindex": self.ifindex, "mtu": self.mtu, "mac": self.mac,
                "blackhole_routes": self.routes, **extra, **self.counters()}
        err = status_files.write_json(self.status_file, data)
        if err is not None:
            log.debug("cannot write %s: %s", self.status_file, err)

    def close(self, remove: bool = True) -> None:
        """Close the sockets; with remove, delete the blackhole routes too (see the module docstring)."""
        for s in (getattr(self, "rx", None), getattr(self, "tx", None), getattr(self, "nl", None)):
            if s is not None:
                s.close()
        if remove:
            for r in self.routes:
                net = ipaddress.ip_network(r)
                _ip("-6" if net.version == 6 else "-4", "route", "del", "blackhole", r)
            self.routes = []
        if getattr(self, "status_file", None) is not None:
            status_files.remove(self.status_file)
