"""The DPDK worker loop on the CPU-crypto rung: ethdev rx -> our ESP core (ipsec-mb) -> ethdev tx.

Python sets things up (EAL, one mbuf pool, one queue per port, the SAs) and
then makes one C call that polls until a packet count, a time limit or
``stop()`` from another thread; the per-packet work is cdefs/dpdk/dpdk_loop.c.
EAL must be started in this process first (``fastpath.dpdk.eal.init``).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from cdefs.sa import SA, Direction
from fastpath.dpdk import eal
from fastpath.engines.base import EngineError
from fastpath.engines.cbatch import CBatchEngine
from fastpath.status import N_STATUS, Status

MAX_BURST = 256
_names = itertools.count()


def _module() -> tuple[Any, Any]:
    return eal.load()


class LoopEngine(CBatchEngine):
    """The ESP core compiled into fastpath._dpdk (ipsec-mb back end): SAs the loop runs are installed here."""

    name = "dpdk-cpu"

    def __init__(self, capacity: int = 64):
        type(self)._ffi, type(self)._lib = _module()
        super().__init__(capacity)

    @property
    def handle(self) -> Any:
        """The C ``struct ipsg_engine *``."""
        return self._engine()


@dataclass
class LoopStats:
    rx: int = 0
    tx: int = 0
    tx_full: int = 0
    not_ip: int = 0
    bursts: int = 0
    polls: int = 0
    seconds: float = 0.0
    drops: dict[Status, int] = field(default_factory=dict)


def _err(ffi: Any, buf: Any) -> str:
    return ffi.string(buf).decode(errors="replace")


class Port:
    """An ethdev port (by vdev name) with one rx and one tx queue on ``pool``."""

    def __init__(self, name: str, pool: Any, nb_desc: int = 1024):
        ffi, lib = _module()
        port = lib.ipsg_dpdk_port_by_name(name.encode())
        if port < 0:
            raise eal.EalError(f"no ethdev named {name!r} (was it given as --vdev?)")
        err = ffi.new("char[256]")
        if lib.ipsg_dpdk_port_start(port, pool, nb_desc, err, len(err)) != 0:
            raise eal.EalError(f"{name}: {_err(ffi, err)}")
        self.name, self.id, self._open = name, int(port), True

    def close(self) -> None:
        """Stop and close the port (net_pcap writes out its tx file here)."""
        if self._open:
            _module()[1].ipsg_dpdk_port_close(self.id)
            self._open = False


class DpdkLoop:
    """One worker: rx_port -> ESP ``direction`` -> tx_port, on the ESP core with ipsec-mb crypto.

    Outbound sends every packet through the SA at index ``out_sa`` (a single tunnel; SPD
    lookup is not part of this loop yet).  Inbound looks SAs up by SPI, as the engines do.
    """

    def __init__(self, rx: str, tx: str, direction: Direction | str, *, burst: int = 32, pool_size: int = 8191,
                 sa_capacity: int = 64, out_sa: int = 0):
        ffi, lib = self._ffi, self._lib = _module()
        if not eal.initialized():
            raise eal.EalError("start EAL first (fastpath.dpdk.eal.init)")
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"burst: expected 1..{MAX_BURST}, got {burst}")
        self.direction = Direction(direction)
        err = ffi.new("char[256]")
        self._closed = False
        self.ports: list[Port] = []
        self._loop: Any = None
        pool = lib.ipsg_dpdk_pool_new(f"ipsg{os.getpid()}_{next(_names)}".encode(), pool_size, 2048 + 128, err,
                                      len(err))
        if pool == ffi.NULL:
            raise eal.EalError(_err(ffi, err))
        self._pool = pool
        self.engine = LoopEngine(sa_capacity)
        try:
            self.ports.append(Port(rx, pool))
            if tx != rx:
                self.ports.append(Port(tx, pool))
            loop = lib.ipsg_dpdk_loop_new(self.engine.handle, self.ports[0].id, self.ports[-1].id,
                                          1 if self.direction == Direction.IN else 0, out_sa, burst, err, len(err))
            if loop == ffi.NULL:
                raise eal.EalError(_err(ffi, err))
            self._loop = loop
        except Exception:
            self.close()
            raise
        self._cstats = ffi.new("struct ipsg_dpdk_loop_stats *")

    def add_sa(self, index: int, sa: SA, direction: Direction | str) -> None:
        """Install an SA (between runs: the loop does not yet take SA changes while it polls)."""
        self.engine.add_sa(index, sa, Direction(direction))

    def run(self, packets: int = 0, seconds: float = 0.0) -> int:
        """Poll until ``packets`` received, ``seconds`` passed or stop(); the GIL is released meanwhile."""
        if self._loop is None:
            raise EngineError("loop is closed")
        if not packets and not seconds:
            raise ValueError("give packets or seconds (or both)")
        return int(self._lib.ipsg_dpdk_loop_run(self._loop, packets, seconds))

    def stop(self) -> None:
        """Ask a running ``run`` to return after its current burst (safe from another thread)."""
        if self._loop is not None:
            self._lib.ipsg_dpdk_loop_stop(self._loop)

    def stats(self) -> LoopStats:
        s = self._cstats
        self._lib.ipsg_dpdk_loop_get_stats(self._loop, s)
        drops = {Status(i): int(s.drops[i]) for i in range(N_STATUS) if s.drops[i] and i in Status._value2member_map_}
        return LoopStats(rx=int(s.rx), tx=int(s.tx), tx_full=int(s.tx_full), not_ip=int(s.not_ip),
                         bursts=int(s.bursts), polls=int(s.polls), seconds=int(s.cycles) / max(int(s.hz), 1),
                         drops=drops)

    def close(self) -> None:
        """Close ports (flushing pcap output), free the loop, the engine (keys zeroed) and the pool."""
        if self._closed:
            return
        self._closed = True
        for p in self.ports:
            p.close()
        if self._loop is not None:
            self._lib.ipsg_dpdk_loop_free(self._loop)
            self._loop = None
        self.engine.close()
        self._lib.ipsg_dpdk_pool_free(self._pool)

    def __enter__(self) -> DpdkLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
