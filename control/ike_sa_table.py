"""The daemon's IKE SAs, found by our SPI (what every datagram and timer needs) or by connection."""

from __future__ import annotations

from collections.abc import Iterator

from control.config import ConnectionConfig
from control.ike.events import State
from control.ike.sa import IkeSA
from control.sa_records import IkeEntry

__all__ = ["IkeSaTable"]


class IkeSaTable:
    def __init__(self) -> None:
        self.by_spi: dict[bytes, IkeEntry] = {}
        self._unique = 0

    def add(self, conn: ConnectionConfig, ike: IkeSA, local_ip: str, now: float) -> IkeEntry:
        self._unique += 1
        entry = IkeEntry(conn, ike, now, local_ip, unique=self._unique)
        self.by_spi[entry.spi] = entry
        return entry

    def get(self, spi: bytes) -> IkeEntry | None:
        return self.by_spi.get(spi)

    def pop(self, spi: bytes) -> IkeEntry | None:
        return self.by_spi.pop(spi, None)

    def __contains__(self, spi: object) -> bool:
        return spi in self.by_spi

    def __len__(self) -> int:
        return len(self.by_spi)

    def __iter__(self) -> Iterator[IkeEntry]:
        return iter(list(self.by_spi.values()))

    def values(self) -> list[IkeEntry]:
        return list(self.by_spi.values())

    def clear(self) -> None:
        self.by_spi.clear()

    def of_conn(self, conn_name: str) -> list[IkeEntry]:
        return [e for e in self.by_spi.values() if e.conn.name == conn_name]

    def connecting(self, conn_name: str) -> IkeEntry | None:
        """An IKE SA of the connection on its way up (not one that replaces another)."""
        return next((e for e in self.by_spi.values() if e.conn.name == conn_name and e.replaces is None
                     and e.ike.state in (State.CREATED, State.CONNECTING)), None)

    def up(self, conn_name: str) -> IkeEntry | None:
        return next((e for e in self.by_spi.values() if e.conn.name == conn_name
                     and e.ike.state == State.ESTABLISHED), None)

    def is_replaced(self, spi: bytes) -> bool:
        return any(e.replaces == spi for e in self.by_spi.values())
