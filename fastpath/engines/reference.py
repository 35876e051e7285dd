"""The reference ESP engine: docs/esp.md in plain Python on ``cryptography``.

It loops per packet, which is fine for what it is for: stating the contract
executably so the C engine can be cross-checked against it, and being the
fallback when nothing faster loads.  The per-packet transforms live in
fastpath/esp_ref.py; this module holds SA slots, SPI lookup and accounting.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import cryptography

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath.batch import Batch
from fastpath.engines.base import Engine, EngineError, SAStats
from fastpath.esp_ref import Drop, Session, locate_esp
from fastpath.status import Status


def probe() -> tuple[bool, str]:
    """Always usable where ``cryptography`` imports; report its version."""
    return True, f"cryptography {cryptography.__version__}"


# batch.sa[i] on inbound when no SA could be charged (as the C engine writes).
NO_INDEX = 0xFFFFFFFF


class ReferenceEngine(Engine):
    name = "reference"
    algorithms = tuple(ENC_ALGS) + tuple(INTEG_ALGS)

    def __init__(self, capacity: int = 1024):
        if capacity < 1:
            raise EngineError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._sessions: dict[int, Session] = {}
        self._by_spi: dict[int, list[int]] = defaultdict(list)   # inbound SAs only
        self._engine_drops: dict[Status, int] = {}

    # -- SA management --------------------------------------------------------

    def add_sa(self, index: int, sa: SA, direction: Direction, *, params: Any = None) -> None:
        if not isinstance(index, int) or not 0 <= index < self.capacity:
            raise EngineError(f"SA index must be 0..{self.capacity - 1}, got {index!r}")
        if sa.enc not in ENC_ALGS or (sa.integ and sa.integ not in INTEG_ALGS):
            raise EngineError(f"algorithm {sa.enc}/{sa.integ} is not supported by the reference engine")
        sa.validate()
        session = Session(sa, Direction(direction))
        if index in self._sessions:
            self.remove_sa(index)
        self._sessions[index] = session
        if session.direction is Direction.IN:
            self._by_spi[sa.spi].append(index)

    def remove_sa(self, index: int) -> None:
        session = self._sessions.pop(index, None)
        if session is None:
            raise EngineError(f"no SA at index {index}")
        if session.direction is Direction.IN:
            slots = self._by_spi[session.sa.spi]
            slots.remove(index)
            if not slots:
                del self._by_spi[session.sa.spi]
        session.wipe()

    def close(self) -> None:
        for index in list(self._sessions):
            self.remove_sa(index)

    def stats(self, index: int) -> SAStats:
        session = self._sessions.get(index)
        if session is None:
            raise EngineError(f"no SA at index {index}")
        st = session.stats
        return dataclasses.replace(st, drops=dict(st.drops))

    def engine_drops(self) -> dict[Status, int]:
        return dict(self._engine_drops)

    # -- data path --------------------------------------------------------------

    def _drop_engine(self, status: Status) -> None:
        self._engine_drops[status] = self._engine_drops.get(status, 0) + 1

    @staticmethod
    def _drop_sa(session: Session, status: Status) -> None:
        drops = session.stats.drops
        drops[status] = drops.get(status, 0) + 1

    def outbound(self, batch: Batch) -> None:
        for i in range(batch.n):
            session = self._sessions.get(int(batch.sa[i]))
            if session is None or session.direction is not Direction.OUT:
                batch.status[i] = Status.NO_SA
                self._drop_engine(Status.NO_SA)
                continue
            try:
                out = session.outbound(batch.packet(i), batch.slot_size)
                batch.set_packet(i, out)
                status = Status.OK
            except Drop as d:
                status = d.status
            except Exception:   # a bug here must cost one packet, not the batch
                status = Status.INTERNAL
            batch.status[i] = status
            if status != Status.OK:
                self._drop_sa(session, status)

    def _lookup(self, spi: int, dst: bytes) -> int | None:
        slots = self._by_spi.get(spi)
        if not slots:
            return None
        if len(slots) == 1:
            return slots[0]
        for index in slots:
            if self._sessions[index].dst == dst:
                return index
        return None

    def inbound(self, batch: Batch) -> None:
        for i in range(batch.n):
            session = None
            try:
                batch.sa[i] = NO_INDEX
                pkt = batch.packet(i)
                outer, esp_off, end = locate_esp(pkt)
                spi = int.from_bytes(pkt[esp_off:esp_off + 4], "big")
                index = self._lookup(spi, outer.dst)
                if index is None:
                    raise Drop(Status.NO_SA)
                batch.sa[i] = index
                session = self._sessions[index]
                batch.set_packet(i, session.inbound(pkt[:end], outer, esp_off))
                status = Status.OK
            except Drop as d:
                status = d.status
            except Exception:
                status = Status.INTERNAL
            batch.status[i] = status
            if status == Status.OK:
                continue
            if session is None:
                self._drop_engine(status)
            else:
                self._drop_sa(session, status)
