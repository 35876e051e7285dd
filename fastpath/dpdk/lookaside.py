"""One outbound SA executed on a lookaside cryptodev, standalone (outside the worker loop).

A thin holder around the ESP core of fastpath._dpdk with the SA's crypto on a
lookaside session (cdefs/dpdk/crypto_cryptodev.c): ESP framing, sequence numbers and
every SA option come from the core, the crypto ops go to the cryptodev's queue
pair in bursts.  It used to be a separate AES-GCM-only framing path in the glue;
now the same code runs here as in the worker loop.  EAL must be running in this
process.
"""

from __future__ import annotations

from cdefs.sa import SA
from cdefs.sa_params import c_params
from fastpath.batch import Batch
from fastpath.dpdk import eal
from fastpath.dpdk.loop import LoopEngine
from fastpath.engines.base import EngineError
from fastpath.status import Status


class LookasideOutbound:
    """One outbound SA on a session of cryptodev ``dev_id`` (e.g. crypto_aesni_gcm, crypto_openssl)."""

    def __init__(self, dev_id: int, sa: SA):
        ffi, lib = eal.load()
        self._engine: LoopEngine | None = LoopEngine(1)
        err = ffi.new("char[256]")
        with c_params(ffi, sa, "out") as p:
            rc = lib.ipsg_cdev_sa_add(self._engine.handle, 0, p, dev_id, lib.IPSG_CDEV_LOOKASIDE, err, len(err))
        if rc != 0:
            self.close()
            raise EngineError(ffi.string(err).decode(errors="replace"))

    @property
    def seq(self) -> int:
        """The next sequence number."""
        if self._engine is None:
            raise EngineError("closed")
        return self._engine.stats(0).seq

    def outbound(self, batch: Batch) -> int:
        """Encrypt the batch in place; statuses as the software engines write them. Returns packets sent."""
        if self._engine is None:
            raise EngineError("closed")
        self._engine.outbound(batch)
        return int((batch.status[:batch.n] == Status.OK).sum())

    def close(self) -> None:
        """Free the session (its keys zeroed by DPDK) and the engine."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


LookasideGcmOutbound = LookasideOutbound   # the name of the first, AES-GCM-only slice
