"""The shared-memory region, fastpath side (and the pieces both sides share).

The layout is cdefs/shm/shm.h; every access goes through fastpath._shm (cffi on
that header), so nothing here restates an offset or a struct format.  The
fastpath attaches to a region control created, installs the SAs it finds into
an ``Engine`` between batches, reserves outbound sequence numbers ahead of
use, and publishes counters and events back.  See docs/shared-memory.md.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from cdefs import defines, sa_params
from cdefs.sa import SA, Direction
from fastpath.engines.base import Engine, SAStats
from fastpath.status import N_STATUS, SAFlag, Status

try:
    from fastpath._shm import ffi, lib
except ImportError as _exc:  # raised with a hint on first use instead of at import
    ffi = lib = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

D = defines("shm.h")
_U64 = sa_params.U64

STATE_FREE = D["IPSG_SHM_SA_FREE"]
STATE_ACTIVE = D["IPSG_SHM_SA_ACTIVE"]
STATE_DYING = D["IPSG_SHM_SA_DYING"]

# Outbound sequence numbers are reserved this far ahead of use, so the
# reservation word is written once per many batches, and a restarted fastpath
# skips at most this many numbers.
SEQ_CHUNK = 1 << 16


class RegionError(RuntimeError):
    """The region cannot be created or attached; the message names the file and what is wrong."""


def _need_lib() -> None:
    if lib is None:
        raise RegionError(f"fastpath._shm is not built ({_IMPORT_ERROR}); run: python cdefs/shm/build_shm.py")


def _err_buf():
    return ffi.new("char[]", 512)


@functools.cache
def _zero_params() -> bytes:
    return bytes(ffi.sizeof("struct ipsg_sa_params"))


# -- SA <-> struct ipsg_sa_params (cdefs.sa_params, on this module's ffi) --------------------


def sa_to_params(sa: SA, direction: Direction | str, p=None):
    """Fill (or allocate) a ``struct ipsg_sa_params`` describing sa (control's install path: kept lean)."""
    _need_lib()
    return sa_params.sa_to_params(ffi, sa, direction, p)


def sa_fields(sa: SA, direction: Direction | str) -> tuple | None:
    """The arguments of ``ipsg_shm_sa_install_fields`` after its first six (slot, state,
    placement, id, old SPI), or None for an SA with traffic selectors, which goes through
    ``sa_to_params``.  Control's install path: one C call instead of a struct filled field
    by field through cffi."""
    return sa_params.sa_fields(ffi, sa, direction)


def params_to_sa(p) -> tuple[SA, Direction]:
    """The SA and direction a ``struct ipsg_sa_params`` describes (raises SAError if it is not valid)."""
    return sa_params.params_to_sa(ffi, p)


def stats_from_c(st) -> SAStats:
    drops = {Status(i): st.drops[i] for i in range(N_STATUS) if st.drops[i] and i in Status._value2member_map_}
    return SAStats(st.packets, st.bytes, drops, st.seq, SAFlag(st.flags))


def stats_to_c(s: SAStats, out) -> None:
    out.packets = s.packets & _U64
    out.bytes = s.bytes & _U64
    for i in range(N_STATUS):
        out.drops[i] = 0
    for status, n in s.drops.items():
        out.drops[int(status)] = n & _U64
    out.seq = s.seq & _U64
    out.flags = int(s.flags)


# -- the region ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacities:
    n_sa: int = 4096
    n_spd: int = 1024
    cmd_ring: int = 4096
    evt_ring: int = 4096


@dataclass
class Counters:
    """What the fastpath published for one SA slot."""

    sa_id: int
    version: int            # slot version the fastpath runs; 0 = not installed
    seq_reserved: int       # outbound: no sequence number >= this has been used
    stats: SAStats


@dataclass(frozen=True)
class PolicyMatch:
    policy: int
    action: int             # IPSG_SPD_PROTECT / BYPASS / DISCARD
    sas: tuple[int, ...]    # SA slots of the bundle; empty PROTECT = ACQUIRE


class Region:
    """A process's attachment to the region (create or attach through the subclasses)."""

    def __init__(self, handle, path: str):
        self._h = handle
        self.path = path
        self.hdr = lib.ipsg_shm_header(handle)
        self.caps = Capacities(self.hdr.caps.n_sa, self.hdr.caps.n_spd, self.hdr.caps.cmd_ring,
                               self.hdr.caps.evt_ring)
        self._sa = ffi.new("struct ipsg_shm_sa *")
        self._ctr = ffi.new("struct ipsg_shm_ctr *")

    @staticmethod
    def _create_handle(path: str | os.PathLike, caps: Capacities):
        _need_lib()
        c = ffi.new("struct ipsg_shm_caps *", [caps.n_sa, caps.n_spd, caps.cmd_ring, caps.evt_ring])
        err = _err_buf()
        h = lib.ipsg_shm_create(os.fsencode(path), c, err, 512)
        if h == ffi.NULL:
            raise RegionError(ffi.string(err).decode(errors="replace"))
        return h

    @staticmethod
    def _attach_handle(path: str | os.PathLike):
        _need_lib()
        err = _err_buf()
        h = lib.ipsg_shm_attach(os.fsencode(path), err, 512)
        if h == ffi.NULL:
            raise RegionError(ffi.string(err).decode(errors="replace"))
        return h

    @property
    def handle(self):
        """The C ``struct ipsg_shm *`` (for C code such as engines that look SAs up directly)."""
        if self._h is None:
            raise RegionError(f"{self.path}: region is closed")
        return self._h

    def close(self) -> None:
        if self._h is not None:
            lib.ipsg_shm_detach(self._h)
            self._h = None
            self.hdr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads both sides use

    def read_slot(self, slot: int):
        """A consistent copy of one SA slot (``struct ipsg_shm_sa``), or None while it is being written."""
        rc = lib.ipsg_shm_sa_read(self.handle, slot, self._sa)
        if rc == D["IPSG_SHM_EINVAL"]:
            raise IndexError(f"SA slot {slot} out of range 0..{self.caps.n_sa - 1}")
        if rc != 0:
            return None
        out = ffi.new("struct ipsg_shm_sa *")
        ffi.memmove(out, self._sa, ffi.sizeof("struct ipsg_shm_sa"))
        return out

    def counters(self, slot: int) -> Counters | None:
        rc = lib.ipsg_shm_ctr_read(self.handle, slot, self._ctr)
        if rc == D["IPSG_SHM_EINVAL"]:
            raise IndexError(f"SA slot {slot} out of range 0..{self.caps.n_sa - 1}")
        if rc != 0:
            return None
        c = self._ctr
        return Counters(c.id, c.version, c.seq_reserved, stats_from_c(c.stats))

    def lookup_spi(self, spi: int, dst: str | ipaddress._BaseAddress | None = None) -> int | None:
        """The slot of the SA with this SPI (and destination), or None."""
        if dst is None:
            r = lib.ipsg_shm_spi_lookup(self.handle, spi, 0, ffi.NULL)
        else:
            a = ipaddress.ip_address(dst)
            r = lib.ipsg_shm_spi_lookup(self.handle, spi, a.version, a.packed)
        return None if r < 0 else r

    def lookup_spis(self, spi: np.ndarray, family: np.ndarray | None = None, dst: np.ndarray | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Slots for a batch of keys in one C call (``ipsg_shm_spi_lookup_batch``); -1 = no SA.

        spi: uint32[n]; dst: None (SPI alone) or uint8[n, 16] (IPv4 in the first 4 bytes) with
        family: uint8[n] (4 or 6).  out (int64[n]) is reused when given, so a fastpath loop
        allocates nothing per batch."""
        spi = np.ascontiguousarray(spi, dtype=np.uint32)
        n = len(spi)
        if out is None:
            out = np.empty(n, dtype=np.int64)
        elif out.dtype != np.int64 or len(out) < n or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous int64 array of at least len(spi) entries")
        if dst is None:
            fp = dp = ffi.NULL
        else:
            if family is None:
                raise ValueError("family is required with dst")
            family = np.ascontiguousarray(family, dtype=np.uint8)
            dst = np.ascontiguousarray(dst, dtype=np.uint8)
            if family.shape != (n,) or dst.shape != (n, 16):
                raise ValueError(f"family must be uint8[{n}] and dst uint8[{n}, 16]")
            fp, dp = ffi.from_buffer("uint8_t[]", family), ffi.from_buffer("uint8_t[]", dst)
        lib.ipsg_shm_spi_lookup_batch(self.handle, n, ffi.from_buffer("uint32_t[]", spi), fp, dp,
                                      ffi.from_buffer("int64_t[]", out))
        return out[:n]

    def lookup_policy(self, src: str, dst: str, proto: int = 0, sport: int = 0, dport: int = 0) -> PolicyMatch | None:
        """The best policy for an outbound packet's selector, or None."""
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        if s.version != d.version:
            raise ValueError("source and destination must be the same IP version")
        out = ffi.new("struct ipsg_spd_result *")
        rc = lib.ipsg_spd_lookup(self.handle, s.version, s.packed, d.packed, proto, sport, dport, out)
        if rc < 0:
            return None
        return PolicyMatch(out.policy, out.action, tuple(out.sa[i] for i in range(out.n_sa)))

    def slot_states(self) -> np.ndarray:
        """Every slot's state byte, as a strided view (no copy) into the region."""
        return self._slot_field("state", np.uint8)

    def _slot_field(self, name: str, dtype) -> np.ndarray:
        """One field of every SA slot (``state`` or a ``p`` member) as a strided view; unlocked reads."""
        if name == "state":
            off = ffi.offsetof("struct ipsg_shm_sa", "state")
        else:
            off = ffi.offsetof("struct ipsg_shm_sa", "p") + ffi.offsetof("struct ipsg_sa_params", name)
        buf = ffi.buffer(lib.ipsg_shm_base(self.handle), self.hdr.total_size)
        return np.ndarray((self.caps.n_sa,), dtype=dtype, buffer=buf, offset=self.hdr.off_sa + off,
                          strides=(ffi.sizeof("struct ipsg_shm_sa"),))


@dataclass
class _Installed:
    version: int
    sa_id: int
    direction: Direction
    base: SAStats               # counters carried over from before this install
    in_engine: bool
    seq_high: int = 0           # outbound: upper bound on the next sequence number
    reserved: int = 0


@dataclass
class SyncResult:
    installed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)      # being written; retried next sync
    rejected: dict[int, str] = field(default_factory=dict)
    spd_changed: bool = False


def _add_stats(a: SAStats, b: SAStats) -> SAStats:
    drops = dict(a.drops)
    for k, v in b.drops.items():
        drops[k] = drops.get(k, 0) + v
    return SAStats(a.packets + b.packets, a.bytes + b.bytes, drops, b.seq, SAFlag(a.flags | b.flags))


class FastpathRegion(Region):
    """The fastpath's attachment: installs SAs into an engine and publishes counters."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(self._attach_handle(path), os.fspath(path))
        self._installed: dict[int, _Installed] = {}
        self._resync_seen = -1          # forces a full scan on the first sync
        self._busy: set[int] = set()
        self._cmd = ffi.new("struct ipsg_shm_cmd *")
        self._st = ffi.new("struct ipsg_sa_stats *")
        self.hdr.fastpath_pid = os.getpid()
        self.hdr.fastpath_attaches += 1
        self.heartbeat()

    @classmethod
    def attach(cls, path: str | os.PathLike) -> FastpathRegion:
        return cls(path)

    def heartbeat(self) -> None:
        self.hdr.fastpath_heartbeat_ns = lib.ipsg_shm_now_ns()

    def installed_slots(self) -> list[int]:
        return sorted(self._installed)

    def _changed_slots(self, result: SyncResult) -> set[int]:
        slots = set(self._busy)
        self._busy.clear()
        full = False
        while lib.ipsg_shm_cmd_pop(self.handle, self._cmd) == 0:
            op = self._cmd.op
            if op == D["IPSG_CMD_SA"]:
                slots.add(self._cmd.slot)
            elif op == D["IPSG_CMD_SPD"]:
                result.spd_changed = True
            else:
                full = True
        resync = self.hdr.resync_gen
        if full or resync != self._resync_seen:
            # Commands were lost (ring full while we were away) or this is a fresh attach:
            # compare every slot's version with what the counters say is installed.
            if self._resync_seen == -1:
                # Fresh attach: the engine is empty, so every live slot needs installing,
                # even those the counters say a previous fastpath ran.
                slots.update((self.slot_states() != STATE_FREE).nonzero()[0].tolist())
            self._resync_seen = resync
            result.spd_changed = True
            cursor = ffi.new("uint32_t *", 0)
            chunk = ffi.new("uint32_t[]", 65536)
            while cursor[0] < self.caps.n_sa:
                k = lib.ipsg_shm_scan(self.handle, cursor, chunk, 65536)
                slots.update(chunk[i] for i in range(k))
            slots.update(self._installed)   # a running fastpath may have missed nothing, but verify
            slots = {s for s in slots if self._stale(s)}
        return slots

    def _stale(self, slot: int) -> bool:
        cur = self.read_slot(slot)
        if cur is None:
            return True
        inst = self._installed.get(slot)
        if cur.state == STATE_FREE:
            return inst is not None or self.counters(slot).version != 0
        return inst is None or inst.version != cur.version

    def sync(self, engine: Engine) -> SyncResult:
        """Apply control's changes to the engine; call between batches."""
        result = SyncResult()
        for slot in sorted(self._changed_slots(result)):
            self._apply(engine, slot, result)
        self.heartbeat()
        return result

    def _apply(self, engine: Engine, slot: int, result: SyncResult) -> None:
        cur = self.read_slot(slot)
        if cur is None:
            self._busy.add(slot)
            result.busy.append(slot)
            return
        inst = self._installed.get(slot)
        if cur.state == STATE_FREE:
            if inst is not None:
                if inst.in_engine:
                    engine.remove_sa(slot)
                del self._installed[slot]
                result.removed.append(slot)
            lib.ipsg_shm_ctr_clear(self.handle, slot)
            return
        if inst is not None and inst.version == cur.version:
            return
        if lib.ipsg_shm_digest(ffi.addressof(cur, "p")) != cur.digest:
            result.rejected[slot] = "digest mismatch"
            return
        try:
            sa, direction = params_to_sa(cur.p)
        except ValueError as exc:
            result.rejected[slot] = str(exc)
            return
        # Counters of the same SA id carry over: across a fastpath restart, and across
        # control updating the SA in place.
        if inst is not None and inst.sa_id == cur.id:
            # Running all along: the engine knows the exact next sequence number.
            base = self._total(engine, slot, inst)
            reserved, resume_at = inst.reserved, 0
        else:
            # Restarted: resume above the reservation, since packets may have left after the
            # last published counters.
            prev = self.counters(slot)
            same = prev is not None and prev.sa_id == cur.id and cur.id != 0
            base = prev.stats if same else SAStats()
            reserved = resume_at = prev.seq_reserved if same else 0
        if inst is not None and inst.in_engine:
            engine.remove_sa(slot)
        in_engine = self._prepare(sa, direction, base, resume_at)
        if in_engine:
            # The engine gets the slot's own bytes (what control wrote, with the resumed counting
            # fields), not sa encoded again: the SA crosses into C once, on control's install.
            p = ffi.addressof(cur, "p")
            sa_params.set_counting(p, sa)
            try:
                engine.add_sa(slot, sa, direction, params=ffi.buffer(p))
            except Exception as exc:  # noqa: BLE001 - an engine refusing one SA must not stop the rest
                result.rejected[slot] = str(exc)
                in_engine = False
            finally:
                ffi.memmove(p, _zero_params(), ffi.sizeof(p[0]))   # no key copy left behind
        self._installed[slot] = _Installed(cur.version, cur.id, direction, base, in_engine,
                                           seq_high=sa.seq, reserved=reserved)
        if direction == Direction.OUT and base.seq < sa.seq:
            base.seq = sa.seq
        stats_to_c(base, self._st)
        lib.ipsg_shm_ctr_update(self.handle, slot, cur.version, cur.id, self._st, lib.ipsg_shm_now_ns())
        result.installed.append(slot)

    @staticmethod
    def _prepare(sa: SA, direction: Direction, base: SAStats, reserved: int) -> bool:
        """Adjust sa for what an earlier install already used; False if it must not run."""
        if base.flags & (SAFlag.HARD_EXPIRED | SAFlag.SEQ_EXHAUSTED):
            return False
        if direction == Direction.OUT:
            # Sequence numbers never go backwards: resume above everything reserved or sent.
            seq_max = (1 << 64) - 1 if sa.esn else (1 << 32) - 1
            sa.seq = min(max(sa.seq, reserved, base.seq), seq_max + 1)
        lt = sa.lifetime
        if lt.hard_bytes:
            if base.bytes >= lt.hard_bytes:
                return False
            lt.hard_bytes -= base.bytes
        if lt.hard_packets:
            if base.packets >= lt.hard_packets:
                return False
            lt.hard_packets -= base.packets
        if base.flags & SAFlag.SOFT_EXPIRED:
            lt.soft_bytes = lt.soft_packets = 0
        else:
            lt.soft_bytes = max(lt.soft_bytes - base.bytes, 1) if lt.soft_bytes else 0
            lt.soft_packets = max(lt.soft_packets - base.packets, 1) if lt.soft_packets else 0
        return True

    @staticmethod
    def _total(engine: Engine, slot: int, inst: _Installed) -> SAStats:
        if not inst.in_engine:
            return inst.base
        return _add_stats(inst.base, engine.stats(slot))

    def reserve(self, counts: dict[int, int] | Iterable[tuple[int, int]]) -> None:
        """Before an outbound batch: make sure the reservation covers count more packets per SA slot."""
        items = counts.items() if isinstance(counts, dict) else counts
        for slot, n in items:
            inst = self._installed.get(slot)
            if inst is None or inst.direction != Direction.OUT:
                continue
            inst.seq_high += n
            if inst.seq_high > inst.reserved:
                inst.reserved = inst.seq_high + SEQ_CHUNK
                lib.ipsg_shm_seq_reserve(self.handle, slot, inst.reserved & _U64)

    def reserve_batch(self, sa: np.ndarray, n: int) -> None:
        """``reserve`` for the first n entries of a batch's SA array."""
        if n:
            slots, counts = np.unique(sa[:n], return_counts=True)
            self.reserve(zip(slots.tolist(), counts.tolist(), strict=True))

    def publish(self, engine: Engine, slots: Iterable[int] | None = None) -> int:
        """Write counters (all installed SAs, or the given ones); returns events posted."""
        now = lib.ipsg_shm_now_ns()
        posted = 0
        for slot in self._installed if slots is None else slots:
            inst = self._installed.get(slot)
            if inst is None:
                continue
            total = self._total(engine, slot, inst)
            stats_to_c(total, self._st)
            posted += lib.ipsg_shm_ctr_update(self.handle, slot, inst.version, inst.sa_id, self._st, now)
            if inst.in_engine and total.flags & SAFlag.HARD_EXPIRED:
                # Dead for good: drop the session (the engine zeroes its keys) without waiting for
                # control, which may be down; the counters keep what it did.
                inst.base = total
                inst.in_engine = False
                engine.remove_sa(slot)
        self.heartbeat()
        return posted

    def acquire(self, policy: int, src: str, dst: str, proto: int = 0, sport: int = 0, dport: int = 0) -> bool:
        """Ask control for an SA (rate-limited per policy); True if an event was posted."""
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        rc = lib.ipsg_shm_acquire(self.handle, policy, s.version, s.packed, d.packed, proto, sport, dport,
                                  lib.ipsg_shm_now_ns())
        return rc == 1
