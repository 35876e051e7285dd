"""Protected-side sockets of the kernel I/O mode.

- **UDP 4500 (RFC 3948 ESP-in-UDP)**, shared with the control process, which needs the same port for
  IKE with the non-ESP marker.  Both processes bind it with SO_REUSEPORT, and the fastpath attaches a
  classic-BPF program to the reuseport group (SO_ATTACH_REUSEPORT_CBPF).  For reuseport programs the
  packet starts at the UDP payload, so the program reads the first 4 bytes: zero (IKE) selects
  control's socket, anything else the fastpath's.  The program returns an index into the group, and the
  kernel renumbers the group when a member leaves (the last member takes the free place), so the
  fastpath does not assume its index: it sends itself a *probe* datagram that the program always steers
  to index 0, and learns from whether the probe arrived which index it holds.  It probes at start, when
  control's pid in the region changes, when IKE reaches its socket anyway, and every few seconds.
  Without control in the group the program's index for it is out of range and the kernel falls back to
  its hash, so nothing is lost while control restarts but IKE may land here (counted, dropped; the peer
  retransmits).
- **Raw IP protocol 50** for plain ESP: the kernel has no ESP of its own here, so a raw socket receives
  ESP packets whole (IPv4 header included) and nothing else consumes them.  An AF_INET6 raw socket
  delivers the ESP packet without its IPv6 header, so it asks for the destination (IPV6_PKTINFO) and
  the traffic class (IPV6_TCLASS) of each packet, and kio_recv_raw6 rebuilds the header from them.
- **Raw IP protocol 51** for AH, the same way.  AH's ICV covers the IPv6 header and the extension
  headers in front of AH, so the AF_INET6 socket also asks for those (IPV6_RECVHOPOPTS, IPV6_RECVDSTOPTS,
  IPV6_RECVRTHDR) and kio_recv_ah6 puts them back.  AH never travels in UDP (RFC 3948 has no AH).
- **IPPROTO_RAW** for sending whole IPv4 packets the engine built (outer header included, so DSCP,
  ECN, DF and the IP ID are the engine's), and for bypass traffic; its AF_INET6 twin (IPV6_HDRINCL)
  does the same for IPv6 packets (traffic class, flow label and hop limit are the engine's).

Every socket here exists in both families: NattSocket takes the family of its address, and the UDP
4500 reuseport group, its steering program and the probe work the same way over IPv6 (a reuseport
program sees the UDP payload in both).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import time

SO_ATTACH_REUSEPORT_CBPF = 51
SOL_UDP = 17
UDP_GRO = 104
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPV6_HDRINCL = 36       # linux/in6.h; an AF_INET6 IPPROTO_RAW socket has it on already
PROBE_MAGIC = b"IPSGPROB"
PROBE_EVERY = 5.0       # seconds between routine probes
PROBE_WAIT = 0.2        # a probe not seen by then went to the other socket
SOCK_BUF = 8 << 20

# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_RET_K = 0x06


def steering_program(control_index: int, fastpath_index: int) -> bytes:
    """The reuseport cBPF program: IKE (first 4 payload bytes zero) -> control, probes -> 0, else fastpath."""
    magic0 = struct.unpack("!I", PROBE_MAGIC[:4])[0]
    insns = [
        (_LD_W_ABS, 0, 0, 0),              # A = payload[0:4] (short datagrams end the program: index 0)
        (_JEQ_K, 3, 0, 0),                 # IKE -> ret control
        (_JEQ_K, 1, 0, magic0),            # probe -> ret 0
        (_RET_K, 0, 0, fastpath_index),
        (_RET_K, 0, 0, 0),
        (_RET_K, 0, 0, control_index),
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def _tune(sock: socket.socket) -> None:
    for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, fallback, SOCK_BUF)


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class NattSocket:
    """The fastpath's member of the UDP 4500 reuseport group on one local IPv4 or IPv6 address."""

    def __init__(self, local_ip: str, port: int, gro: bool = False):
        self.local_ip, self.port = local_ip, port
        self.family = family_of(local_ip)
        self.v6 = self.family == socket.AF_INET6
        self.local_packed = socket.inet_pton(self.family, local_ip)
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.v6:
            # the traffic class (ECN) of each datagram goes into the rebuilt outer header (RFC 6040)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
        _tune(self.sock)
        try:
            self.sock.bind((local_ip, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"cannot join UDP {local_ip}:{port} ({exc.strerror}); the control process "
                          "must bind it with SO_REUSEPORT") from None
        self.sock.setblocking(False)
        # UDP_GRO: a run of datagrams (a peer's UDP_SEGMENT send, or the kernel's GRO) arrives as one
        # bundle with its segment size; kio_recv_udp4_gro splits it into slots
        self.gro = False
        if gro:
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self.index = 1                      # a guess until the first probe answers
        self._attach()
        self._probe_sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self._nonce = 0
        self._probe_at: float | None = None
        self.next_probe = 0.0
        self.reattached = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _attach(self) -> None:
        prog = steering_program(1 - self.index, self.index)
        buf = ctypes.create_string_buffer(prog)
        fprog = struct.pack("H6xQ", len(prog) // 8, ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)

    def probe(self, now: float | None = None) -> None:
        """Start a probe: its arrival (reported by kio_recv_udp4) tells which index we hold."""
        now = time.monotonic() if now is None else now
        self._nonce = int.from_bytes(os.urandom(8), "big") or 1
        self._probe_at = now
        self.next_probe = now + PROBE_EVERY
        try:
            self._probe_sock.sendto(PROBE_MAGIC + self._nonce.to_bytes(8, "big"), (self.local_ip, self.port))
        except OSError:
            self._probe_at = None

    def tick(self, seen_nonce: int, now: float) -> bool:
        """Feed the last probe nonce the receive path saw; True when the steering was re-attached."""
        if self._probe_at is None:
            if now >= self.next_probe:
                self.probe(now)
            return False
        if seen_nonce == self._nonce:
            index = 0
        elif now - self._probe_at > PROBE_WAIT:
            index = 1
        else:
            return False
        self._probe_at = None
        if index != self.index:
            self.index = index
            self._attach()
            self.reattached += 1
            return True
        return False

    @property
    def probing(self) -> bool:
        return self._probe_at is not None

    def close(self) -> None:
        self.sock.close()
        self._probe_sock.close()


def esp_socket() -> socket.socket:
    """Raw IPv4 socket receiving every ESP packet (IP header included)."""
    return raw_socket4(IPPROTO_ESP)


def raw_socket4(proto: int) -> socket.socket:
    """Raw IPv4 socket receiving every packet of IP protocol ``proto`` (IP header included)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    _tune(s)
    s.setblocking(False)
    return s


def raw_socket6(proto: int) -> socket.socket:
    """Raw IPv6 socket receiving every packet of ``proto``; the kernel strips the IPv6 header, so each
    packet's destination and traffic class come along as control messages (kio_recv_raw6), and for AH
    also the extension headers in front of it, which its ICV covers (kio_recv_ah6)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    opts = [socket.IPV6_RECVPKTINFO, socket.IPV6_RECVTCLASS]
    if proto == IPPROTO_AH:
        opts += [socket.IPV6_RECVHOPOPTS, socket.IPV6_RECVDSTOPTS, socket.IPV6_RECVRTHDR]
    for opt in opts:
        s.setsockopt(socket.IPPROTO_IPV6, opt, 1)
    _tune(s)
    s.setblocking(False)
    return s


def esp_socket6() -> socket.socket:
    """Raw IPv6 socket receiving every ESP packet (see raw_socket6)."""
    return raw_socket6(IPPROTO_ESP)


def send_socket() -> socket.socket:
    """IPPROTO_RAW: sends whole IPv4 packets, header included (blocking: a full queue holds the batch back)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    _tune(s)
    return s


def send_socket6() -> socket.socket:
    """AF_INET6 IPPROTO_RAW: sends whole IPv6 packets, header included (Linux sets IPV6_HDRINCL for
    IPPROTO_RAW; set here too so the intent is explicit).  Blocking, as send_socket."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
    except OSError:
        pass                     # kernels before 4.5 lack the option, not the behaviour
    _tune(s)
    return s


def ipv6_sockets(receive_esp: bool) -> tuple[socket.socket | None, socket.socket | None]:
    """(raw ESP receive socket, IPPROTO_RAW send socket) for IPv6, each None where it is not wanted or
    cannot be opened (a kernel with IPv6 off).  The send socket is opened even without IPv6 outer
    addresses: bypass traffic from the TUN may be IPv6."""
    esp = esp_socket6() if receive_esp else None
    try:
        raw = send_socket6()
    except OSError:
        if esp is not None:
            esp.close()
            raise
        raw = None
    return esp, raw


def single_fd(socks: list[NattSocket], v6: bool) -> int:
    """The NAT-T socket kio_send* may use for one family: the only one of that family, else -1 (with
    several local addresses ESP-in-UDP leaves whole on the raw socket, from the engine's source)."""
    fam = [s for s in socks if s.v6 == v6]
    return fam[0].fileno() if len(fam) == 1 else -1
