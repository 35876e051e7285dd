"""Per-SA crypto sessions of the DPDK fastpath: place an SA, make its session, fall back on failure.

The ESP core compiled into fastpath._dpdk runs every SA's framing and state; its
crypto runs either on the module's own intel-ipsec-mb back end or, per SA, on a
DPDK session (cdefs/dpdk/crypto_cryptodev.c): lookaside on a cryptodev queue pair, or
CPU crypto (``rte_cryptodev_sym_cpu_crypto_process``).  ``SessionTable.install``
takes fastpath.placement's decision and walks it: it tries the chosen engine,
and when that cannot make a session it calls ``Placement.fall_back`` with the
reason and tries the next, down to the software core, which runs everything.
The final placement (with every reason) is what list-sas shows.

Sessions are created in the process that runs EAL (the fastpath), never in
control.  Removing an SA frees its session: DPDK zeroes the session's private
data and the SA's key copies in C are wiped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cdefs.algorithms import AH_INTEG_ALGS
from cdefs.sa import SA, Direction
from cdefs.sa_params import c_params
from fastpath.dpdk.caps import DpdkCaps
from fastpath.engines.base import EngineError
from fastpath.engines.cbatch import CBatchEngine
from fastpath.placement import ALL_ALGORITHMS, Candidate, EngineKind, Placement, SoftwareEngine, place
from fastpath.status import SAFlag

# The software rung inside the DPDK module: the ESP and AH cores on intel-ipsec-mb, which run every algorithm.
CORE_SOFTWARE = (SoftwareEngine("ipsec-mb-core", ALL_ALGORITHMS, frozenset(AH_INTEG_ALGS)),)

MODES = {EngineKind.LOOKASIDE_CRYPTO: "IPSG_CDEV_LOOKASIDE", EngineKind.CPU_CRYPTO: "IPSG_CDEV_CPU"}
# The rungs behind an rte_security session (cdefs/dpdk/dpdk_security.c): ethdev port or cryptodev by name.
SECURITY_ACTIONS = {EngineKind.INLINE_CRYPTO: "IPSG_DPDK_ACT_INLINE_CRYPTO",
                    EngineKind.INLINE_PROTOCOL: "IPSG_DPDK_ACT_INLINE_PROTOCOL",
                    EngineKind.LOOKASIDE_PROTOCOL: "IPSG_DPDK_ACT_LOOKASIDE_PROTOCOL"}
# A session the device accepted still cannot carry the SA: the worker has no path that hands packets
# to it (rte_security_set_pkt_metadata + TX_SEC_OFFLOAD, RX_SEC_OFFLOAD checks, protocol-offload framing).
_NO_DATA_PATH = ("{device}: rte_security {kind} session created and destroyed again: the worker's "
                 "{kind} data path is not implemented in this build")


@dataclass(frozen=True)
class SessionStats:
    enqueued: int
    dequeued: int
    enqueue_retries: int
    cpu_calls: int
    cpu_ops: int
    auth_failed: int
    errors: int
    sessions: int


def _lib_of(engine: CBatchEngine) -> tuple[Any, Any]:
    ffi, lib = engine._ffi, engine._lib  # noqa: SLF001 - the engine's own cffi module
    if not hasattr(lib, "ipsg_cdev_sa_add"):
        raise EngineError(f"{engine.name}: not the DPDK module's ESP core (no cryptodev back end)")
    return ffi, lib


def add_session_sa(engine: CBatchEngine, index: int, sa: SA, direction: Direction | str, device: str,
                   kind: EngineKind, params: Any = None) -> None:
    """Install SA ``index`` of ``engine`` with its crypto on a DPDK session; EngineError says why not.

    params: sa as ``struct ipsg_sa_params`` bytes (``Engine.add_sa``), handed to C as they are."""
    ffi, lib = _lib_of(engine)
    if kind in SECURITY_ACTIONS:
        security_session_probe(engine, sa, direction, device, kind, params)
    if kind not in MODES:
        raise EngineError(f"{kind} has no session type in this module")
    if not 0 <= index < engine.capacity:
        raise EngineError(f"SA index {index} outside 0..{engine.capacity - 1}")
    dev = lib.ipsg_cdev_by_name(device.encode())
    if dev < 0:
        raise EngineError(f"no cryptodev named {device!r} in this process")
    err = ffi.new("char[256]")
    with c_params(ffi, sa, Direction(direction), params) as p:
        rc = lib.ipsg_cdev_sa_add(engine._engine(), index, p, dev, getattr(lib, MODES[kind]), err,  # noqa: SLF001
                                  len(err))
    if rc != 0:
        raise EngineError(ffi.string(err).decode(errors="replace"))
    engine._esn[index] = sa.esn  # noqa: SLF001 - stats() reads it for the ESN wrap


def security_session_new(lib: Any, ffi: Any, sa: SA, direction: Direction | str, device: str,
                         kind: EngineKind, params: Any = None) -> Any:
    """An rte_security session for the SA on ``device`` (the real DPDK 22.11 calls, cdefs/dpdk/dpdk_security.c);
    EngineError with the device's answer (no security context, no matching capability, refused).
    Free it with ``lib.ipsg_sec_session_free``."""
    err = ffi.new("char[256]")
    with c_params(ffi, sa, Direction(direction), params) as p:
        sess = lib.ipsg_sec_session_new(device.encode(), getattr(lib, SECURITY_ACTIONS[kind]), p, err, len(err))
    if sess == ffi.NULL:
        raise EngineError(ffi.string(err).decode(errors="replace"))
    return sess


def security_session_probe(engine: CBatchEngine, sa: SA, direction: Direction | str, device: str,
                           kind: EngineKind, params: Any = None) -> None:
    """Try the rte_security rung for real; always EngineError, with DPDK's refusal or, when the device
    accepted the session, why the SA still cannot run there (the session is destroyed first)."""
    ffi, lib = _lib_of(engine)
    sess = security_session_new(lib, ffi, sa, direction, device, kind, params)
    lib.ipsg_sec_session_free(sess)
    raise EngineError(_NO_DATA_PATH.format(device=device, kind=kind))


def session_stats(engine: CBatchEngine) -> SessionStats | None:
    """Counters of the engine's cryptodev back end, or None before its first session."""
    ffi, lib = _lib_of(engine)
    st = ffi.new("struct ipsg_cdev_stats *")
    if lib.ipsg_cdev_stats(engine._engine(), st) != 0:  # noqa: SLF001
        return None
    return SessionStats(*(int(getattr(st, f)) for f in SessionStats.__dataclass_fields__))


class SessionTable:
    """The SAs of one DPDK ESP engine, each on the engine its placement gave it.

    ``caps`` are the capability tables discovered at start-up (fastpath.dpdk.caps);
    ``ports`` restricts inline rungs as in ``place``.
    """

    def __init__(self, engine: CBatchEngine, caps: DpdkCaps | None,
                 software: Sequence[SoftwareEngine] = CORE_SOFTWARE, ports: Sequence[str] | None = None):
        _lib_of(engine)
        self.engine = engine
        self.caps = caps
        self.software = tuple(software)
        self.ports = ports
        self._placements: dict[int, Placement] = {}

    def install(self, index: int, sa: SA, direction: Direction | str,
                placement: Placement | None = None, params: Any = None) -> Placement:
        """Place the SA (or take ``placement``), make its session, falling back until one works.

        Returns the placement in effect (its engine is the one running the SA; every engine
        given up on carries its reason).  EngineError only when nothing can run it.  params: as
        ``Engine.add_sa``, the same bytes for every rung tried.
        """
        direction = Direction(direction)
        p = placement or place(sa, direction, self.caps, software=self.software, ports=self.ports)
        while p.engine is not None:
            why = self._try(index, sa, direction, p.engine, params)
            if why is None:
                self._placements[index] = p
                return p
            p = p.fall_back(why)
        reasons = "; ".join(f"{c}: {r}" for c, r in p.skipped)
        raise EngineError(f"SA {index} (SPI {sa.spi:#x}): no engine can run it ({reasons})")

    def _try(self, index: int, sa: SA, direction: Direction, cand: Candidate, params: Any) -> str | None:
        try:
            if cand.kind == EngineKind.SOFTWARE:
                self.engine.add_sa(index, sa, direction, params=params)
            else:
                add_session_sa(self.engine, index, sa, direction, cand.device, cand.kind, params)
        except EngineError as exc:
            return str(exc)
        return None

    def remove(self, index: int) -> None:
        """Delete the SA: its session is freed and its keys zeroed."""
        self.engine.remove_sa(index)
        self._placements.pop(index, None)

    def placement(self, index: int) -> Placement:
        return self._placements[index]

    def placements(self) -> dict[int, dict[str, Any]]:
        """Per SA index what list-sas shows: engine, fall-backs left, and every reason."""
        return {i: p.to_dict() for i, p in sorted(self._placements.items())}

    def is_session(self, index: int) -> bool:
        """Whether the SA's crypto runs on a DPDK session (not the module's ipsec-mb)."""
        _, lib = _lib_of(self.engine)
        r = lib.ipsg_cdev_sa_on_session(self.engine._engine(), index)  # noqa: SLF001
        if r < 0:
            raise EngineError(f"no SA at index {index}")
        return bool(r)

    def stats(self) -> SessionStats | None:
        return session_stats(self.engine)


def engine_label(p: Placement) -> str:
    """The engine name list-sas shows: the device for a DPDK session, ``dpdk-cpu`` for the core's ipsec-mb."""
    c = p.engine
    if c is None:
        return "-"
    return "dpdk-cpu" if c.kind == EngineKind.SOFTWARE else c.device


def prefer_engine(p: Placement, want: str) -> Placement:
    """``p`` with the eligible engine named ``want`` ("rung:device", as ``str(Candidate)``) tried first
    (a benchmark pinning a rung); unchanged when that engine is not eligible for the SA."""
    first = [c for c in p.eligible if str(c) == want]
    if not first:
        return p
    return replace(p, eligible=(*first, *(c for c in p.eligible if str(c) != want)))


class PlacedEngine:
    """An ESP engine whose SAs go through a ``SessionTable``: what the gateway worker hands ``FastpathRegion``.

    ``FastpathRegion.sync`` and ``publish`` call ``add_sa``/``remove_sa``/``stats`` on it as on any engine;
    here ``add_sa`` places the SA (with fall-back) and makes its session, ``remove_sa`` frees the session
    (keys zeroed).  ``changes`` counts placement changes, so the caller knows when to publish them.
    """

    def __init__(self, core: CBatchEngine, caps: DpdkCaps | None, ports: Sequence[str] | None = None,
                 on_place: Any = None, prefer: str | None = None, on_dead: Any = None):
        self.core = core
        self.prefer = prefer
        self.table = SessionTable(core, caps, ports=ports)
        self.name = core.name
        self.capacity = core.capacity
        self.changes = 0
        self._on_place = on_place
        self._on_dead = on_dead

    @property
    def handle(self) -> Any:
        return self.core.handle  # type: ignore[attr-defined]

    def add_sa(self, index: int, sa: SA, direction: Direction, *, params: Any = None) -> None:
        p = place(sa, direction, self.table.caps, software=self.table.software, ports=self.table.ports)
        if self.prefer is not None:
            p = prefer_engine(p, self.prefer)
        p = self.table.install(index, sa, direction, p, params)
        self.changes += 1
        if self._on_place is not None:
            self._on_place(index, p)

    def remove_sa(self, index: int) -> None:
        """Free the SA's session; ``on_dead(index)`` when it goes because it hard-expired (``publish``
        drops such an SA while control may still list it; the worker must not wait for it)."""
        try:
            dead = bool(self.core.stats(index).flags & SAFlag.HARD_EXPIRED)
        except EngineError:
            dead = False
        self.table.remove(index)
        self.changes += 1
        if dead and self._on_dead is not None:
            self._on_dead(index)

    def stats(self, index: int) -> Any:
        return self.core.stats(index)

    def engine_drops(self) -> Any:
        return self.core.engine_drops()

    def placements(self) -> dict[int, dict[str, Any]]:
        """Per SA slot: ``Placement.to_dict()`` plus ``label`` (the engine name list-sas shows)."""
        return {i: {**self.table.placement(i).to_dict(), "label": engine_label(self.table.placement(i))}
                for i in self.table.placements()}

    def close(self) -> None:
        self.core.close()
