"""The reference ESP engine: docs/esp.md in plain Python on ``cryptography``.

It loops per packet, which is fine for what it is for: stating the contract
executably so the C engine can be cross-checked against it, and being the
fallback when nothing faster loads.  The per-packet transforms live in
fastpath/esp_ref.py (and fastpath/ah_ref.py for AH SAs); this module holds SA
slots, SPI lookup and accounting.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import cryptography

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath import iphdr
from fastpath.ah_ref import AhSession, locate_ah
from fastpath.batch import Batch
from fastpath.engines.base import Engine, EngineError, SAStats
from fastpath.esp_ref import Drop, Session, locate_esp
from fastpath.iphdr import PROTO_AH, PROTO_ESP
from fastpath.status import Status


def probe() -> tuple[bool, str]:
    """Always usable where ``cryptography`` imports; report its version."""
    return True, f"cryptography {cryptography.__version__}"


# batch.sa[i] on inbound when no SA could be charged (as the C engine writes).
NO_INDEX = 0xFFFFFFFF


def _key(sa: SA) -> tuple[int, int]:
    return (PROTO_AH if sa.is_ah else PROTO_ESP), sa.spi


def _locate(pkt: bytes) -> tuple[int, iphdr.IPInfo, int, int]:
    """(IP protocol, outer header, IPsec header offset, end) of an ESP or AH packet; raises Drop."""
    try:
        return (PROTO_ESP, *locate_esp(pkt))
    except Drop as d:
        if d.status != Status.NOT_ESP:
            raise
    return (PROTO_AH, *locate_ah(pkt))


class ReferenceEngine(Engine):
    name = "reference"
    algorithms = tuple(ENC_ALGS) + tuple(INTEG_ALGS)
    ah_algorithms = tuple(AH_INTEG_ALGS)

    def __init__(self, capacity: int = 1024):
        if capacity < 1:
            raise EngineError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._sessions: dict[int, Session] = {}
        # Inbound SAs only, by (IP protocol, SPI): an AH and an ESP SA may share an SPI.
        self._by_spi: dict[tuple[int, int], list[int]] = defaultdict(list)
        self._engine_drops: dict[Status, int] = {}

    # -- SA management --------------------------------------------------------

    def add_sa(self, index: int, sa: SA, direction: Direction, *, params: Any = None) -> None:
        if not isinstance(index, int) or not 0 <= index < self.capacity:
            raise EngineError(f"SA index must be 0..{self.capacity - 1}, got {index!r}")
        if sa.is_ah:
            if sa.integ not in AH_INTEG_ALGS:
                raise EngineError(f"AH algorithm {sa.integ} is not supported by the reference engine")
        elif sa.enc not in ENC_ALGS or (sa.integ and sa.integ not in INTEG_ALGS):
            raise EngineError(f"algorithm {sa.enc}/{sa.integ} is not supported by the reference engine")
        sa.validate()
        session = (AhSession if sa.is_ah else Session)(sa, Direction(direction))
        if index in self._sessions:
            self.remove_sa(index)
        self._sessions[index] = session
        if session.direction is Direction.IN:
            self._by_spi[_key(sa)].append(index)

    def remove_sa(self, index: int) -> None:
        session = self._sessions.pop(index, None)
        if session is None:
            raise EngineError(f"no SA at index {index}")
        if session.direction is Direction.IN:
            key = _key(session.sa)
            slots = self._by_spi[key]
            slots.remove(index)
            if not slots:
                del self._by_spi[key]
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

    def _lookup(self, proto: int, spi: int, dst: bytes) -> int | None:
        slots = self._by_spi.get((proto, spi))
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
                proto, outer, esp_off, end = _locate(pkt)
                # AH carries its SPI after next header, length and reserved.
                spi_off = esp_off + 4 if proto == PROTO_AH else esp_off
                spi = int.from_bytes(pkt[spi_off:spi_off + 4], "big")
                index = self._lookup(proto, spi, outer.dst)
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
