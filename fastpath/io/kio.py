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
V_MAX = K["KIO_V_MAX"]
NO_SA = K["KIO_NO_SA"]
VERDICT_NAMES = {V_PROTECT: "protect", V_BYPASS: "bypass", V_DISCARD: "discard", V_ACQUIRE: "acquire",
                 V_ICMP: "icmp-too-big", V_NO_POLICY: "no-policy", V_MALFORMED: "malformed",
                 V_TOO_BIG: "too-big", V_DROPPED: "engine-drop"}


class KioError(RuntimeError):
    pass


def need_lib() -> None:
    if lib is None:
        raise KioError(f"fastpath._kio is not built ({IMPORT_ERROR}); run: python cdefs/build_kio.py")


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

    def recv_raw4(self, fd: int, start: int = 0, limit: int | None = None) -> int:
        n = lib.kio_recv_raw4(fd, self.c, start, self.batch.capacity if limit is None else limit)
        if n < 0:
            raise OSError(-n, "raw receive failed")
        return n

    def send(self, raw_fd: int, n: int, sel: Any, want: int, udp_fd: int = -1, udp_port: int = 4500) -> tuple[int, int]:
        """(packets sent, packets the kernel refused)."""
        u = self._u64
        u[0] = 0
        sent = lib.kio_send(raw_fd, udp_fd, udp_port, self.c, n, ffi.from_buffer(sel), want, u)
        return sent, int(u[0])

    def move_to(self, n: int, sel: Any, want: int, dst: KBatch, dst_start: int = 0) -> int:
        return lib.kio_move(self.c, n, ffi.from_buffer(sel), want, dst.c, dst_start)
