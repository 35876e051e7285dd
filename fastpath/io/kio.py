"""Python face of fastpath._kio: a Batch seen as ``struct kio_batch``, and whole-batch I/O calls.

One call moves a whole batch; nothing here loops over packets.
"""

from __future__ import annotations

from typing import Any

from cdefs import defines
from fastpath.batch import Batch

try:
    from fastpath._kio import ffi, lib
except ImportError as _exc:  # reported on first use
    ffi = lib = None
    IMPORT_ERROR: ImportError | None = _exc
else:
    IMPORT_ERROR = None

K = defines("kio.h")
V_PROTECT = K["KIO_V_PROTECT"]
V_BYPASS = K["KIO_V_BYPASS"]
V_DISCARD = K["KIO_V_DISCARD"]
V_ACQUIRE = K["KIO_V_ACQUIRE"]
V_ICMP = K["KIO_V_ICMP"]
V_NO_POLICY = K["KIO_V_NO_POLICY"]
V_MALFORMED = K["KIO_V_MALFORMED"]
V_TOO_BIG = K["KIO_V_TOO_BIG"]
V_DROPPED = K["KIO_V_DROPPED"]
V_FRAGMENTED = K["KIO_V_FRAGMENTED"]
V_MAX = K["KIO_V_MAX"]
NO_SA = K["KIO_NO_SA"]
VERDICT_NAMES = {V_PROTECT: "protect", V_BYPASS: "bypass", V_DISCARD: "discard", V_ACQUIRE: "acquire",
                 V_ICMP: "icmp-too-big", V_NO_POLICY: "no-policy", V_MALFORMED: "malformed",
                 V_TOO_BIG: "too-big", V_DROPPED: "engine-drop",
                 V_FRAGMENTED: "fragmented"}


VNET_HDR_LEN = K["KIO_VNET_HDR_LEN"]
GSO_MAX = K["KIO_GSO_MAX"]
GRO_BUNDLES = 4          # UDP_GRO bundles per receive call (each up to 64 segments)


class KioError(RuntimeError):
    pass


def need_lib() -> None:
    if lib is None:
        raise KioError(f"fastpath._kio is not built ({IMPORT_ERROR}); run: python cdefs/kio/build_kio.py")


class KBatch:
    """A Batch and the ``struct kio_batch`` pointing into its arrays (built once, reused every call)."""

    def __init__(self, batch: Batch):
        need_lib()
        self.batch = batch
        c = ffi.new("struct kio_batch *")
        self._keep = [ffi.from_buffer(a) for a in (batch.buf, batch.off, batch.len, batch.sa, batch.status)]
        c.buf = ffi.cast("uint8_t *", self._keep[0])
        c.off = ffi.cast("uint32_t *", self._keep[1])
        c.len = ffi.cast("uint32_t *", self._keep[2])
        c.sa = ffi.cast("uint32_t *", self._keep[3])
        c.status = ffi.cast("uint8_t *", self._keep[4])
        c.slot_size = batch.slot_size
        c.headroom = batch.headroom
        c.tailroom = batch.tailroom
        c.capacity = batch.capacity
        self.c = c
        self._u64 = ffi.new("uint64_t[2]")
        self._u4 = ffi.new("uint64_t[4]")
        self._o = ffi.new("struct kio_out *")

    def tun_read(self, fd: int, start: int = 0, limit: int | None = None) -> int:
        n = lib.kio_tun_read(fd, self.c, start, self.batch.capacity if limit is None else limit)
        if n < 0:
            raise OSError(-n, "TUN read failed")
        return n

    def tun_write(self, fd: int, n: int, sel: Any, want: int) -> int:
        return lib.kio_tun_write(fd, self.c, n, ffi.from_buffer(sel), want)

    def recv_udp4(self, fd: int, local_addr: bytes, local_port: int, start: int = 0,
                  limit: int | None = None) -> tuple[int, int, int]:
        """(datagrams kept, IKE datagrams seen, probe nonce seen or 0)."""
        u = self._u64
        u[0] = u[1] = 0
        n = lib.kio_recv_udp4(fd, self.c, start, self.batch.capacity if limit is None else limit, local_addr,
                              local_port, u, u + 1)
        if n < 0:
            raise OSError(-n, "UDP receive failed")
        return n, int(u[0]), int(u[1])

    def recv_udp6(self, fd: int, local_addr: bytes, local_port: int, start: int = 0,
                  limit: int | None = None) -> tuple[int, int, int]:
        """recv_udp4 on an AF_INET6 socket (16-byte local_addr; IPv6 + UDP header in front)."""
        u = self._u64
        u[0] = u[1] = 0
        n = lib.kio_recv_udp6(fd, self.c, start, self.batch.capacity if limit is None else limit, local_addr,
                              local_port, u, u + 1)
        if n < 0:
            raise OSError(-n, "UDP receive failed")
        return n, int(u[0]), int(u[1])

    def recv_udp(self, fd: int, local_addr: bytes, local_port: int, start: int = 0,
                 limit: int | None = None) -> tuple[int, int, int]:
        """recv_udp4 or recv_udp6, by the length of local_addr (4 or 16 bytes)."""
        f = self.recv_udp6 if len(local_addr) == 16 else self.recv_udp4
        return f(fd, local_addr, local_port, start, limit)

    def recv_raw4(self, fd: int, start: int = 0, limit: int | None = None) -> int:
        n = lib.kio_recv_raw4(fd, self.c, start, self.batch.capacity if limit is None else limit)
        if n < 0:
            raise OSError(-n, "raw receive failed")
        return n

    def recv_raw6(self, fd: int, start: int = 0, limit: int | None = None) -> int:
        """Raw AF_INET6 protocol-50 socket (sockets.esp_socket6): each packet gets its IPv6 header back."""
        n = lib.kio_recv_raw6(fd, self.c, start, self.batch.capacity if limit is None else limit)
        if n < 0:
            raise OSError(-n, "raw receive failed")
        return n

    def recv_ah6(self, fd: int, start: int = 0, limit: int | None = None) -> tuple[int, int]:
        """Raw AF_INET6 protocol-51 socket (sockets.raw_socket6(IPPROTO_AH)): each packet gets its IPv6
        header and the extension headers in front of AH back.  (packets, packets left out because their
        headers could not be put back)."""
        left_out = ffi.new("uint64_t *")
        n = lib.kio_recv_ah6(fd, self.c, start, self.batch.capacity if limit is None else limit, left_out)
        if n < 0:
            raise OSError(-n, "raw receive failed")
        return n, int(left_out[0])

    def _out(self, raw_fd: int, udp_fd: int, udp_port: int, raw6_fd: int, udp6_fd: int, gso: bool) -> Any:
        o = self._o
        o.raw4, o.udp4, o.raw6, o.udp6, o.udp_port, o.gso = raw_fd, udp_fd, raw6_fd, udp6_fd, udp_port, gso
        return o

    def send(self, raw_fd: int, n: int, sel: Any, want: int, udp_fd: int = -1, udp_port: int = 4500, *,
             raw6_fd: int = -1, udp6_fd: int = -1) -> tuple[int, int]:
        """(packets sent, packets the kernel refused or with no socket of their family).  IPv4 packets go
        to raw_fd/udp_fd, IPv6 ones to raw6_fd/udp6_fd (ESP-in-UDP on the UDP socket, the rest whole)."""
        u = self._u64
        u[0] = 0
        sent = lib.kio_send_out(self._out(raw_fd, udp_fd, udp_port, raw6_fd, udp6_fd, False), self.c, n,
                                ffi.from_buffer(sel), want, u)
        return sent, int(u[0])

    # -- offloads (cdefs/kio/kio_gso.c) ----------------------------------------------------------------

    def tun_read_vnet(self, fd: int, rx: TunRx, start: int = 0, limit: int | None = None) -> int:
        """Segments of TUN reads (IFF_VNET_HDR) into slots start..; a super-segment that does not fit
        stays pending in rx for the next call."""
        n = lib.kio_tun_read_vnet(fd, self.c, start, self.batch.capacity if limit is None else limit, rx.c)
        if n < 0:
            raise OSError(-n, "TUN read failed")
        return n

    def tun_write_vnet(self, fd: int, n: int, sel: Any, want: int, tx: Any) -> int:
        """Write the selected packets, in-order TCP runs coalesced into GSO writes; tx: struct kio_tun_tx *."""
        return lib.kio_tun_write_vnet(fd, self.c, n, ffi.from_buffer(sel), want, tx)

    def send_gso(self, raw_fd: int, n: int, sel: Any, want: int, udp_fd: int = -1,
                 udp_port: int = 4500, *, raw6_fd: int = -1, udp6_fd: int = -1) -> tuple[int, int]:
        """Like send, with UDP_SEGMENT runs on udp_fd and udp6_fd."""
        u = self._u64
        u[0] = 0
        sent = lib.kio_send_out(self._out(raw_fd, udp_fd, udp_port, raw6_fd, udp6_fd, True), self.c, n,
                                ffi.from_buffer(sel), want, u)
        return sent, int(u[0])

    def recv_udp4_gro(self, fd: int, local_addr: bytes, local_port: int, scratch: Any, start: int = 0,
                      limit: int | None = None) -> tuple[int, int, int, int]:
        """(segments kept, IKE datagrams seen, probe nonce seen or 0, segments dropped for want of a slot)."""
        u = self._u4
        u[0] = u[1] = u[2] = 0
        n = lib.kio_recv_udp4_gro(fd, self.c, start, self.batch.capacity if limit is None else limit,
                                  local_addr, local_port, u, u + 1, u + 2, scratch, ffi.sizeof(scratch) // GSO_MAX)
        if n < 0:
            raise OSError(-n, "UDP receive failed")
        return n, int(u[0]), int(u[1]), int(u[2])

    def recv_udp6_gro(self, fd: int, local_addr: bytes, local_port: int, scratch: Any, start: int = 0,
                      limit: int | None = None) -> tuple[int, int, int, int]:
        """recv_udp4_gro on an AF_INET6 socket."""
        u = self._u4
        u[0] = u[1] = u[2] = 0
        n = lib.kio_recv_udp6_gro(fd, self.c, start, self.batch.capacity if limit is None else limit,
                                  local_addr, local_port, u, u + 1, u + 2, scratch, ffi.sizeof(scratch) // GSO_MAX)
        if n < 0:
            raise OSError(-n, "UDP receive failed")
        return n, int(u[0]), int(u[1]), int(u[2])

    def recv_udp_gro(self, fd: int, local_addr: bytes, local_port: int, scratch: Any, start: int = 0,
                     limit: int | None = None) -> tuple[int, int, int, int]:
        """recv_udp4_gro or recv_udp6_gro, by the length of local_addr (4 or 16 bytes)."""
        f = self.recv_udp6_gro if len(local_addr) == 16 else self.recv_udp4_gro
        return f(fd, local_addr, local_port, scratch, start, limit)

    def move_to(self, n: int, sel: Any, want: int, dst: KBatch, dst_start: int = 0) -> int:
        return lib.kio_move(self.c, n, ffi.from_buffer(sel), want, dst.c, dst_start)


class TunRx:
    """The read side of a TUN opened with IFF_VNET_HDR: one read's buffer, kept while its segments wait for
    free slots, and counters (reads, super-segment reads, segments, bad reads)."""

    def __init__(self) -> None:
        need_lib()
        self.buf = ffi.new("uint8_t[]", VNET_HDR_LEN + GSO_MAX)
        self.c = ffi.new("struct kio_tun_rx *")
        self.c.buf = self.buf

    @property
    def pending(self) -> bool:
        return self.c.len != 0

    def load(self, vnet_hdr: bytes, packet: bytes) -> None:
        """Make vnet_hdr + packet the pending read (tests feed the segmenter this way)."""
        data = vnet_hdr + packet
        ffi.memmove(self.buf, data, len(data))
        self.c.len = len(data)
        self.c.next = 0

    def emit(self, kb: KBatch, start: int = 0, limit: int | None = None) -> int:
        return lib.kio_vnet_emit(self.c, kb.c, start, kb.batch.capacity if limit is None else limit)

    def counters(self) -> dict[str, int]:
        return {"reads": self.c.reads, "gso_reads": self.c.gso_reads, "segments": self.c.segments,
                "bad": self.c.bad}


def new_gro_scratch(bundles: int = GRO_BUNDLES) -> Any:
    """Receive buffer for KBatch.recv_udp4_gro: room for `bundles` coalesced datagrams of up to 64 KiB."""
    need_lib()
    return ffi.new("uint8_t[]", bundles * GSO_MAX)


def new_tun_tx() -> Any:
    """Counters for KBatch.tun_write_vnet (struct kio_tun_tx: writes, packets, failed)."""
    need_lib()
    return ffi.new("struct kio_tun_tx *")


def coalesce(kb: KBatch, n: int, sel: Any, want: int, i: int) -> tuple[int, bytes]:
    """(packets joining packet i's run, its virtio_net_hdr); rewrites packet i's headers for a run (tests)."""
    hdr = ffi.new("uint8_t[]", VNET_HDR_LEN)
    cnt = lib.kio_coalesce(kb.c, n, ffi.from_buffer(sel), want, i, hdr)
    return cnt, bytes(ffi.buffer(hdr, VNET_HDR_LEN))
