"""First DPDK execution path: outbound ESP with AES-GCM on a lookaside cryptodev.

Tunnel mode, IPv4 outer header, no ESN, no UDP encapsulation: the slice that
shows the cryptodev enqueue/dequeue path produces ESP our software engines
accept.  The framing and the burst loop run in C (cdefs/dpdk_glue.c); this
class only holds the session.  EAL must be running in this process.
"""

from __future__ import annotations

from typing import Any

from fastpath.batch import Batch
from fastpath.dpdk import eal
from fastpath.sa import SA, Mode


class LookasideGcmOutbound:
    """One outbound AES-GCM SA executed on cryptodev ``dev_id`` (e.g. crypto_aesni_gcm)."""

    def __init__(self, dev_id: int, sa: SA):
        if not sa.enc.startswith("aes-gcm-") or sa.mode != Mode.TUNNEL or sa.esn or sa.udp_encap \
                or sa.src.version != 4:
            raise ValueError("this path covers AES-GCM, tunnel mode, IPv4 outer, no ESN, no UDP encapsulation")
        self._ffi, self._lib = eal.load()
        err = self._ffi.new("char[256]")
        la = self._lib.ipsg_dpdk_la_gcm_new(dev_id, sa.enc_key, len(sa.enc_key), err, len(err))
        if la == self._ffi.NULL:
            raise eal.EalError(self._ffi.string(err).decode())
        self._la: Any = self._ffi.gc(la, self._lib.ipsg_dpdk_la_free)
        self._sa = sa
        self._seq = self._ffi.new("uint64_t *", sa.seq)
        self._src = sa.src.packed
        self._dst = sa.dst.packed

    @property
    def seq(self) -> int:
        """The next sequence number."""
        return int(self._seq[0])

    def outbound(self, batch: Batch) -> int:
        """Encrypt the batch in place; statuses as the software engines write them. Returns packets sent."""
        ffi = self._ffi

        def ptr(ctype: str, arr: Any) -> Any:
            return ffi.cast(ctype, arr.ctypes.data)

        return int(self._lib.ipsg_dpdk_la_gcm_encrypt(
            self._la, self._sa.spi, self._seq, self._src, self._dst, self._sa.ttl,
            ptr("uint8_t *", batch.buf), batch.slot_size, batch.n, ptr("uint32_t *", batch.off),
            ptr("uint32_t *", batch.len), ptr("uint8_t *", batch.status)))

    def close(self) -> None:
        """Free the session, pools and stop the device (keys are zeroed)."""
        if self._la is not None:
            self._ffi.release(self._la)   # runs ipsg_dpdk_la_free now
            self._la = None
