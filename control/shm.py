"""The shared-memory region, control side: SAs, policies, counters, events.

Control creates the region file (mode 0600), is the only writer of SA slots,
the SPI index, policies and their SA bindings, and the only reader of the
event ring.  After a restart it attaches to the existing file and
``reconcile()`` reads everything back.  Layout: cdefs/shm/shm.h; design and
fault behaviour: docs/shared-memory.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cdefs.sa import SA, Direction
from fastpath.shm import (
    STATE_ACTIVE,
    STATE_DYING,
    STATE_FREE,
    Capacities,
    Counters,
    D,
    Region,
    RegionError,
    ffi,
    lib,
    params_to_sa,
    sa_fields,
    sa_to_params,
)
from fastpath.status import SAFlag

__all__ = ["ControlRegion", "Capacities", "Counters", "RegionError", "SAHandle", "Policy", "Event",
           "PROTECT", "BYPASS", "DISCARD", "default_path"]

PROTECT = D["IPSG_SPD_PROTECT"]
BYPASS = D["IPSG_SPD_BYPASS"]
DISCARD = D["IPSG_SPD_DISCARD"]
MAX_BUNDLE = D["IPSG_SPD_MAX_BUNDLE"]

EVENT_NAMES = {
    D["IPSG_EV_ACQUIRE"]: "acquire",
    D["IPSG_EV_SOFT_EXPIRE"]: "soft-expire",
    D["IPSG_EV_HARD_EXPIRE"]: "hard-expire",
    D["IPSG_EV_SEQ_EXHAUSTED"]: "seq-exhausted",
    D["IPSG_EV_ALARM_AUTH"]: "alarm-auth",
    D["IPSG_EV_ALARM_REPLAY"]: "alarm-replay",
}


def default_path(name: str = "ipsecgw") -> Path:
    return Path("/dev/shm") / f"{name}.shm"


class SAHandle(NamedTuple):
    """Where an install landed (immutable; a named tuple because a frozen dataclass costs more to
    build than the rest of an install's Python work)."""

    slot: int
    sa_id: int
    version: int


@dataclass(frozen=True)
class Policy:
    """One SPD entry: selectors, action, priority (lower wins)."""

    src: str = "0.0.0.0/0"
    dst: str = "0.0.0.0/0"
    proto: int = 0
    sport: tuple[int, int] = (0, 65535)
    dport: tuple[int, int] = (0, 65535)
    action: int = PROTECT
    priority: int = 1000
    policy_id: int = 0


@dataclass(frozen=True)
class Event:
    kind: str                # acquire, soft-expire, hard-expire, seq-exhausted, alarm-auth, alarm-replay
    slot: int                # SA slot (policy index for acquire)
    sa_id: int
    packets: int             # expiry: packets so far; alarm: drops in the window
    bytes: int
    time_ns: int
    policy: int = 0
    src: str = ""
    dst: str = ""
    proto: int = 0
    sport: int = 0
    dport: int = 0


@dataclass
class Reconciled:
    """What a restarted control found in an existing region."""

    sas: dict[int, tuple[SA, Direction, int]]     # slot -> (SA, direction, sa id)
    policies: dict[int, Policy]
    repaired: int                                 # records left torn by a dead writer, now freed
    expired: list[int]                            # hard-expired or exhausted SAs, now deleted


_ZERO_PARAMS = bytes(ffi.sizeof("struct ipsg_sa_params")) if ffi is not None else b""


class ControlRegion(Region):
    """Control's attachment: create() a new region or attach() to the one that survived a restart."""

    def __init__(self, handle, path: str, attached: bool = False):
        super().__init__(handle, path)
        self.repaired = 0
        if attached:
            # Only one control runs at a time, so any record still being written belongs to a
            # control that died mid-write: free it (keys zeroed), then rebuild the SPI index from
            # the slots, which also drops entries a crash left between slot and index updates.
            self.repaired = lib.ipsg_shm_repair(self.handle)
            lib.ipsg_shm_hash_rebuild(self.handle)
            self.hdr.resync_gen += 1
        self._params = ffi.new("struct ipsg_sa_params *")
        self._pol = ffi.new("struct ipsg_spd_policy *")
        self._ev = ffi.new("struct ipsg_shm_event *")
        self._spi: dict[int, int] = {}    # slot -> SPI it is indexed under
        if not attached:   # a new region is all free; scanning it would fault in every page
            self._free_sa = list(range(self.caps.n_sa - 1, -1, -1))
            self._free_pol = list(range(self.caps.n_spd - 1, -1, -1))
        else:
            # Vectorised over strided views: a restart at a million SAs takes a second, not a minute.
            # Safe without the seqlock because this process is the only writer and torn slots were freed.
            states = self.slot_states()
            self._free_sa = (states == STATE_FREE).nonzero()[0][::-1].tolist()
            used = (states != STATE_FREE).nonzero()[0]
            spis = self._slot_field("spi", np.uint32)[used]
            self._spi = dict(zip(used.tolist(), spis.tolist(), strict=True))
            self._free_pol = []
            for i in range(self.caps.n_spd - 1, -1, -1):
                lib.ipsg_spd_read(self.handle, i, self._pol)
                if not self._pol.state:
                    self._free_pol.append(i)
        self.hdr.control_pid = os.getpid()
        self.heartbeat()

    @classmethod
    def create(cls, path: str | os.PathLike | None = None, capacities: Capacities | None = None,
               **caps: int) -> ControlRegion:
        """A new region file (fails if it exists); capacities from ``capacities`` or keywords."""
        path = os.fspath(path or default_path())
        c = capacities or Capacities(**caps)
        return cls(cls._create_handle(path, c), path)

    @classmethod
    def attach(cls, path: str | os.PathLike | None = None) -> ControlRegion:
        path = os.fspath(path or default_path())
        return cls(cls._attach_handle(path), path, attached=True)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, capacities: Capacities | None = None) -> ControlRegion:
        """Attach if the file exists, else create it."""
        path = os.fspath(path or default_path())
        if os.path.exists(path):
            return cls.attach(path)
        return cls.create(path, capacities)

    def heartbeat(self) -> None:
        self.hdr.control_heartbeat_ns = lib.ipsg_shm_now_ns()

    def _bump(self) -> None:
        self.hdr.generation += 1

    # -- SAs ------------------------------------------------------------------------

    def install_sa(self, sa: SA, direction: Direction | str, placement: int = 0, validate: bool = True) -> SAHandle:
        """Write a new SA into a free slot and index it; visible to the fastpath on return.

        ``validate=False`` skips re-checking an SA already validated at construction.
        """
        if not self._free_sa:
            raise RegionError(f"{self.path}: all {self.caps.n_sa} SA slots are in use")
        if validate:
            sa.validate()
        slot = self._free_sa.pop()
        hdr = self.hdr
        sa_id = hdr.next_sa_id + 1
        hdr.next_sa_id = sa_id
        try:
            version = self._write(slot, sa, direction, STATE_ACTIVE, placement, sa_id)
        except BaseException:
            self._free_sa.append(slot)
            raise
        return SAHandle(slot, sa_id, version)

    def install_sas(self, items: Iterable[tuple[SA, Direction | str]], placement: int = 0,
                    validate: bool = True) -> list[SAHandle]:
        """Install many SAs, each as ``install_sa`` would (one seqlocked slot write, index entry and
        command each), with the per-call Python overhead paid once.

        All or nothing: if an SA is invalid or cannot be written, the ones this call already
        installed are deleted again (keys zeroed) before the error is raised.  A fastpath syncing
        meanwhile may see them come and go, as with any install followed by a delete.
        """
        items = items if isinstance(items, list) else list(items)
        if len(items) > len(self._free_sa):
            raise RegionError(f"{self.path}: {len(items)} SAs do not fit the {len(self._free_sa)} free SA slots")
        hdr = self.hdr
        first_id = hdr.next_sa_id + 1
        hdr.next_sa_id = first_id + len(items) - 1
        handles: list[SAHandle] = []
        free, spis, h = self._free_sa, self._spi, self.handle
        install = lib.ipsg_shm_sa_install_fields
        try:
            for n, (sa, direction) in enumerate(items):
                # Validated as it is written, not in a pass of its own: one walk over the SA objects.
                if validate:
                    sa.validate()
                slot = free.pop()
                args = sa_fields(sa, direction)
                try:
                    if args is None:
                        version = self._write(slot, sa, direction, STATE_ACTIVE, placement, first_id + n)
                    else:
                        version = install(h, slot, STATE_ACTIVE, placement, first_id + n, spis.get(slot, 0), *args)
                        if version < 0:
                            self._failed(slot, version)
                        spis[slot] = sa.spi
                except BaseException:
                    free.append(slot)
                    raise
                handles.append(SAHandle(slot, first_id + n, version))
        except BaseException:
            for done in handles:
                self.delete_sa(done.slot)
            raise
        return handles

    def update_sa(self, slot: int, sa: SA, direction: Direction | str, placement: int = 0,
                  dying: bool = False) -> SAHandle:
        """Rewrite an installed SA in place (same SA id: counters carry over)."""
        cur = self._existing(slot)
        sa.validate()
        version = self._write(slot, sa, direction, STATE_DYING if dying else STATE_ACTIVE, placement,
                              cur.id)
        return SAHandle(slot, cur.id, version)

    def _existing(self, slot: int):
        cur = self.read_slot(slot)
        if cur is None:
            raise RegionError(f"{self.path}: SA slot {slot} is being written by another process")
        if cur.state == STATE_FREE:
            raise KeyError(f"SA slot {slot} is not installed")
        return cur

    def _write(self, slot: int, sa: SA, direction: Direction, state: int, placement: int, sa_id: int) -> int:
        # One C call: slot (seqlocked), then its SPI index entry, then the command and generation.
        args = sa_fields(sa, direction)
        if args is not None:
            version = lib.ipsg_shm_sa_install_fields(self.handle, slot, state, placement, sa_id,
                                                     self._spi.get(slot, 0), *args)
        else:   # traffic selectors: the full struct
            p = sa_to_params(sa, direction, self._params)
            try:
                version = lib.ipsg_shm_sa_install(self.handle, slot, p, state, placement, sa_id,
                                                  self._spi.get(slot, 0))
            finally:
                ffi.memmove(p, _ZERO_PARAMS, len(_ZERO_PARAMS))   # no key copy left behind
        if version < 0:
            self._failed(slot, version)
        self._spi[slot] = sa.spi
        return version

    def _failed(self, slot: int, code: int) -> None:
        if code == D["IPSG_SHM_EFULL"]:
            lib.ipsg_shm_sa_delete(self.handle, slot)
            self._spi.pop(slot, None)
            raise RegionError(f"{self.path}: SPI index is full")
        raise RegionError(f"{self.path}: cannot write SA slot {slot} (code {code})")

    def delete_sa(self, slot: int) -> None:
        """Remove an SA: unindex it, zero its keys in the slot, tell the fastpath."""
        if self._spi.pop(slot, None) is None:
            raise KeyError(f"SA slot {slot} is not installed")
        lib.ipsg_shm_sa_delete(self.handle, slot)
        self._free_sa.append(slot)

    def sa(self, slot: int) -> tuple[SA, Direction, int] | None:
        """The SA installed in a slot (SA, direction, sa id), or None."""
        cur = self.read_slot(slot)
        if cur is None or cur.state == STATE_FREE:
            return None
        sa, direction = params_to_sa(cur.p)
        return sa, direction, cur.id

    def installed(self) -> list[int]:
        return sorted(self._spi)

    # -- policies -------------------------------------------------------------------

    def _policy_struct(self, pol: Policy):
        src = ipaddress.ip_network(pol.src, strict=False)
        dst = ipaddress.ip_network(pol.dst, strict=False)
        if src.version != dst.version:
            raise ValueError(f"policy {pol.src} -> {pol.dst}: both prefixes must be the same IP version")
        for name, (lo, hi) in (("sport", pol.sport), ("dport", pol.dport)):
            if not 0 <= lo <= hi <= 65535:
                raise ValueError(f"policy {name} range {lo}-{hi} is not within 0-65535")
        if pol.action not in (PROTECT, BYPASS, DISCARD):
            raise ValueError(f"policy action {pol.action}: expected PROTECT, BYPASS or DISCARD")
        if not 0 <= pol.priority <= 0xFFFFFFFF or not 0 <= pol.proto <= 255:
            raise ValueError("policy priority must fit 32 bits and proto 0..255")
        p = self._pol
        ffi.memmove(p, bytes(ffi.sizeof(p[0])), ffi.sizeof(p[0]))
        p.state = 1
        p.family = src.version
        p.action = pol.action
        p.proto = pol.proto
        p.priority = pol.priority
        p.src_plen, p.dst_plen = src.prefixlen, dst.prefixlen
        p.sport_lo, p.sport_hi = pol.sport
        p.dport_lo, p.dport_hi = pol.dport
        ffi.memmove(p.src, src.network_address.packed, len(src.network_address.packed))
        ffi.memmove(p.dst, dst.network_address.packed, len(dst.network_address.packed))
        p.id = pol.policy_id
        return p

    def add_policy(self, pol: Policy, sas: tuple[int, ...] = (), commit: bool = True) -> int:
        """Add a policy (index returned); PROTECT with no SAs makes ACQUIREs until bound."""
        if not self._free_pol:
            raise RegionError(f"{self.path}: all {self.caps.n_spd} policy entries are in use")
        p = self._policy_struct(pol)
        index = self._free_pol.pop()
        self.bind_policy(index, sas)
        lib.ipsg_spd_write(self.handle, index, p)
        if commit:
            self.commit_policies()
        return index

    def delete_policy(self, index: int, commit: bool = True) -> None:
        self._policy(index)
        p = self._pol
        ffi.memmove(p, bytes(ffi.sizeof(p[0])), ffi.sizeof(p[0]))
        lib.ipsg_spd_write(self.handle, index, p)
        self.bind_policy(index, ())
        self._free_pol.append(index)
        if commit:
            self.commit_policies()

    def bind_policy(self, index: int, sas: tuple[int, ...]) -> None:
        """Point a PROTECT policy at an SA (or bundle); takes effect without recompiling."""
        if len(sas) > MAX_BUNDLE:
            raise ValueError(f"an SA bundle holds at most {MAX_BUNDLE} SAs")
        arr = ffi.new("uint32_t[]", list(sas) or [0])
        if lib.ipsg_spd_bind(self.handle, index, len(sas), arr) != 0:
            raise ValueError(f"cannot bind policy {index} to SA slots {sas}")
        self._bump()

    def commit_policies(self) -> int:
        """Compile the policy table into the inactive lookup copy and flip to it."""
        n = lib.ipsg_spd_compile(self.handle)
        if n < 0:
            raise RegionError(f"{self.path}: cannot compile the SPD (code {n})")
        self._bump()
        return n

    def _policy(self, index: int):
        if not 0 <= index < self.caps.n_spd:
            raise IndexError(f"policy index {index} out of range 0..{self.caps.n_spd - 1}")
        lib.ipsg_spd_read(self.handle, index, self._pol)
        if not self._pol.state:
            raise KeyError(f"policy {index} is not installed")
        return self._pol

    def policy(self, index: int) -> Policy:
        p = self._policy(index)
        fam = p.family
        src = ipaddress.ip_network((bytes(ffi.buffer(p.src, 4 if fam == 4 else 16)), p.src_plen))
        dst = ipaddress.ip_network((bytes(ffi.buffer(p.dst, 4 if fam == 4 else 16)), p.dst_plen))
        return Policy(str(src), str(dst), p.proto, (p.sport_lo, p.sport_hi), (p.dport_lo, p.dport_hi), p.action,
                      p.priority, p.id)

    # -- counters and events --------------------------------------------------------

    def events(self, delete_expired: bool = True) -> Iterator[Event]:
        """Drain the event ring.

        With delete_expired, an SA reported hard-expired or out of sequence numbers is deleted
        (keys zeroed in its slot) as its event is read, if the slot still holds that SA.
        """
        e = self._ev
        while lib.ipsg_shm_event_pop(self.handle, e) == 0:
            if delete_expired and e.type in (D["IPSG_EV_HARD_EXPIRE"], D["IPSG_EV_SEQ_EXHAUSTED"]):
                cur = self.read_slot(e.slot) if e.slot < self.caps.n_sa else None
                if cur is not None and cur.state != STATE_FREE and cur.id == e.sa_id and e.slot in self._spi:
                    self.delete_sa(e.slot)
            kind = EVENT_NAMES.get(e.type, f"type-{e.type}")
            src = dst = ""
            if e.type == D["IPSG_EV_ACQUIRE"]:
                n = 4 if e.family == 4 else 16
                src = str(ipaddress.ip_address(bytes(ffi.buffer(e.src, n))))
                dst = str(ipaddress.ip_address(bytes(ffi.buffer(e.dst, n))))
            yield Event(kind, e.slot, e.sa_id, e.packets, e.bytes, e.time_ns, e.policy, src, dst, e.proto, e.sport,
                        e.dport)

    @property
    def events_dropped(self) -> int:
        """Events the fastpath could not post because the ring was full."""
        base = lib.ipsg_shm_base(self.handle) + self.hdr.off_evt
        return ffi.cast("struct ipsg_shm_ring *", base).dropped

    def fastpath_alive(self, within_ns: int = 2_000_000_000) -> bool:
        hb = self.hdr.fastpath_heartbeat_ns
        return hb != 0 and lib.ipsg_shm_now_ns() - hb < within_ns

    # -- restart --------------------------------------------------------------------

    def reconcile(self, delete_expired: bool = True) -> Reconciled:
        """After attaching to a surviving region: read SAs and policies back (torn records were
        already freed by attach).

        SAs the fastpath reports hard-expired or out of sequence numbers are deleted
        (their keys zeroed) when delete_expired, since their events may have been lost.
        """
        sas: dict[int, tuple[SA, Direction, int]] = {}
        expired = []
        for slot in sorted(self._spi):
            got = self.sa(slot)
            if got is None:
                continue
            ctr = self.counters(slot)
            if (delete_expired and ctr is not None and ctr.sa_id == got[2]
                    and ctr.stats.flags & (SAFlag.HARD_EXPIRED | SAFlag.SEQ_EXHAUSTED)):
                self.delete_sa(slot)
                expired.append(slot)
                continue
            sas[slot] = got
        policies = {}
        for i in range(self.caps.n_spd):
            lib.ipsg_spd_read(self.handle, i, self._pol)
            if self._pol.state:
                policies[i] = self.policy(i)
        self.commit_policies()   # a compile the crash interrupted never flipped; redo it
        self.heartbeat()
        return Reconciled(sas, policies, self.repaired, expired)

    def unlink(self) -> None:
        """Remove the region file (the mapping stays valid until closed)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


__all__ += ["STATE_ACTIVE", "STATE_DYING", "STATE_FREE", "Reconciled"]
