"""The C batch ESP and AH engines: one wrapper over any cffi module built from cdefs/esp/esp_core.c and ah_core.c.

The modules (fastpath._esp_openssl, fastpath._esp_ipsecmb) expose the same
API, cdefs/esp/esp.h, and differ only in their crypto back end.  Python only
hands SAs over as ``struct ipsg_sa_params`` (the region slot's own bytes when the
fastpath installs from shared memory) and whole batches to C: one call per batch,
no per-packet Python.  A batch goes to the ESP entry point, the AH one, or the one
taking both, by which protocols the installed SAs of its direction use, so an
engine without AH SAs runs ESP exactly as before.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from cdefs.sa_params import c_params
from fastpath.batch import Batch
from fastpath.engines.base import Engine, EngineError, SAStats
from fastpath.status import N_STATUS, SAFlag, Status


def load_module(name: str) -> tuple[Any, Any, ImportError | None]:
    """(ffi, lib, None) of a compiled module, or (None, None, the ImportError)."""
    try:
        mod: ModuleType = importlib.import_module(name)
    except ImportError as exc:
        return None, None, exc
    return mod.ffi, mod.lib, None


def probe_module(name: str, ffi: Any, lib: Any, error: ImportError | None) -> tuple[bool, str]:
    """Whether the module loaded, with its back end's version or the reason it did not."""
    if lib is None:
        return False, f"{name} not importable: {error}"
    return True, ffi.string(lib.ipsg_backend_version()).decode()


def _check_array(arr: np.ndarray, dtype: type, n: int, name: str) -> None:
    if arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.writeable or arr.shape[0] < n:
        raise EngineError(f"batch.{name} must be a writable contiguous {np.dtype(dtype).name} array of >= {n} items")


class CBatchEngine(Engine):
    """ESP and AH over batches in C; subclasses name the compiled module (its crypto back end)."""

    name = ""
    algorithms: tuple[str, ...] = tuple(ENC_ALGS) + tuple(INTEG_ALGS)
    ah_algorithms: tuple[str, ...] = tuple(AH_INTEG_ALGS)
    _ffi: Any = None
    _lib: Any = None
    _import_error: ImportError | None = None

    def __init__(self, capacity: int = 1024):
        self._e = None
        ffi, lib = self._ffi, self._lib
        if lib is None:
            raise EngineError(f"{self.name} engine unavailable: {self._import_error}")
        self.capacity = capacity
        self._e = lib.ipsg_engine_new(capacity)
        if self._e == ffi.NULL:
            self._e = None
            raise EngineError(f"cannot create an engine of capacity {capacity}")
        self._cb = ffi.new("struct ipsg_batch *")
        self._err = ffi.new("char[256]")
        self._stats = ffi.new("struct ipsg_sa_stats *")
        self._esn: dict[int, bool] = {}
        # (is AH, direction) of each installed SA: which entry point a batch of a direction needs.
        self._kind: dict[int, tuple[bool, Direction]] = {}
        self._entry = {Direction.OUT: lib.ipsg_esp_outbound, Direction.IN: lib.ipsg_ipsec_inbound}
        # The arrays self._cb points into, with their buffer views: reused while a
        # caller keeps passing the same Batch (the usual loop), so a call costs no
        # per-array checks or view creation.
        self._bound: tuple[Any, ...] = ()
        self._bound_cap = 0

    def _engine(self) -> Any:
        if self._e is None:
            raise EngineError("engine is closed")
        return self._e

    def add_sa(self, index: int, sa: SA, direction: Direction, *, params: Any = None) -> None:
        """params: sa as ``struct ipsg_sa_params`` bytes (the region slot's copy), handed to C as they are."""
        e = self._engine()
        ffi, lib = self._ffi, self._lib
        if not 0 <= index < self.capacity:
            raise EngineError(f"SA index {index} outside 0..{self.capacity - 1}")
        if sa.is_ah:
            if sa.integ not in self.ah_algorithms:
                raise EngineError(f"{self.name} engine does not serve AH with {sa.integ}")
        elif sa.enc not in self.algorithms or (sa.integ and sa.integ not in self.algorithms):
            raise EngineError(f"{self.name} engine does not serve {sa.enc}/{sa.integ}")
        with c_params(ffi, sa, Direction(direction), params) as p:
            rc = lib.ipsg_sa_add(e, index, p, self._err, len(self._err))
        if rc != 0:
            raise EngineError(f"SA {index}: {ffi.string(self._err).decode()}")
        self._esn[index] = sa.esn
        self._kind[index] = (sa.is_ah, Direction(direction))
        self._choose_entries()

    def _choose_entries(self) -> None:
        # Inbound is always ipsg_ipsec_inbound (set in __init__): both cores, so an AH packet for which no
        # AH SA exists is no-sa, as in the reference, not the ESP core's not-esp, and with AH SAs only an
        # ESP packet is no-sa too.  What the AH pass adds to an ESP batch is one look at each status.
        # Outbound picks by the SAs installed for it.
        lib = self._lib
        kinds = {is_ah for is_ah, d in self._kind.values() if d is Direction.OUT}
        self._entry[Direction.OUT] = (lib.ipsg_ah_outbound if kinds == {True} else
                                      lib.ipsg_ipsec_outbound if True in kinds else lib.ipsg_esp_outbound)

    def remove_sa(self, index: int) -> None:
        e = self._engine()
        if not 0 <= index < self.capacity or self._lib.ipsg_sa_del(e, index) != 0:
            raise EngineError(f"no SA at index {index}")
        self._esn.pop(index, None)
        self._kind.pop(index, None)
        self._choose_entries()

    def _bind(self, batch: Batch, n: int) -> None:
        arrays = (batch.buf, batch.off, batch.len, batch.sa, batch.status)
        b = self._bound
        if b and all(x is y for x, y in zip(arrays, b[:5], strict=True)) and self._cb.slot_size == batch.slot_size \
                and n <= self._bound_cap:
            return
        ffi = self._ffi
        self._unbind()
        _check_array(batch.buf, np.uint8, n * batch.slot_size, "buf")
        for arr, dtype, name in ((batch.off, np.uint32, "off"), (batch.len, np.uint32, "len"),
                                 (batch.sa, np.uint32, "sa"), (batch.status, np.uint8, "status")):
            _check_array(arr, dtype, n, name)
        views = (
            ffi.from_buffer("uint8_t[]", batch.buf, require_writable=True),
            ffi.from_buffer("uint32_t[]", batch.off, require_writable=True),
            ffi.from_buffer("uint32_t[]", batch.len, require_writable=True),
            ffi.from_buffer("uint32_t[]", batch.sa, require_writable=True),
            ffi.from_buffer("uint8_t[]", batch.status, require_writable=True),
        )
        cb = self._cb
        cb.buf, cb.off, cb.len, cb.sa, cb.status = views
        cb.slot_size = batch.slot_size
        self._bound = arrays + views
        self._bound_cap = min(batch.buf.shape[0] // batch.slot_size, *(a.shape[0] for a in arrays[1:]))

    def _unbind(self) -> None:
        cb = self._cb
        cb.buf = cb.off = cb.len = cb.sa = cb.status = self._ffi.NULL
        cb.n = 0
        self._bound = ()
        self._bound_cap = 0

    def _run(self, batch: Batch, fn: Any) -> None:
        e = self._engine()
        n = batch.n
        if n == 0:
            return
        self._bind(batch, n)
        self._cb.n = n
        fn(e, self._cb)

    def outbound(self, batch: Batch) -> None:
        self._run(batch, self._entry[Direction.OUT])

    def inbound(self, batch: Batch) -> None:
        self._run(batch, self._entry[Direction.IN])

    def stats(self, index: int) -> SAStats:
        e = self._engine()
        st = self._stats
        if not 0 <= index < self.capacity or self._lib.ipsg_sa_stats(e, index, st) != 0:
            raise EngineError(f"no SA at index {index}")
        flags = SAFlag(st.flags)
        seq = int(st.seq)
        if self._esn.get(index) and seq == 0 and SAFlag.SEQ_EXHAUSTED in flags:
            seq = 2**64  # the C side wraps the "next" number past 2^64-1
        drops = {Status(i): int(st.drops[i]) for i in range(N_STATUS) if st.drops[i] and i in Status._value2member_map_}
        return SAStats(packets=int(st.packets), bytes=int(st.bytes), drops=drops, seq=seq, flags=flags)

    def engine_drops(self) -> dict[Status, int]:
        e = self._engine()
        out = self._ffi.new("uint64_t[]", N_STATUS)
        self._lib.ipsg_engine_drops(e, out)
        return {Status(i): int(out[i]) for i in range(N_STATUS) if out[i] and i in Status._value2member_map_}

    def close(self) -> None:
        if self._e is not None:
            self._unbind()
            self._lib.ipsg_engine_free(self._e)
            self._e = None
            self._esn.clear()
            self._kind.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


__all__ = ["CBatchEngine", "load_module", "probe_module"]
