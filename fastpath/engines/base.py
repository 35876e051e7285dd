"""The batch API every ESP engine implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from cdefs.sa import SA, Direction
from fastpath.batch import Batch
from fastpath.status import SAFlag, Status


@dataclass
class SAStats:
    """Per-SA counters; drops are keyed by Status (only non-zero entries)."""

    packets: int = 0
    bytes: int = 0
    drops: dict[Status, int] = field(default_factory=dict)
    seq: int = 0                # outbound: next sequence number; inbound: highest accepted
    flags: SAFlag = SAFlag(0)


class EngineError(RuntimeError):
    """An engine cannot take an SA (algorithm unsupported, bad index...)."""


class Engine(abc.ABC):
    """One way of executing ESP SAs over batches.

    SAs are installed at small integer indexes (the shared-memory slot number
    later).  ``outbound`` reads ``batch.sa[i]`` to find each packet's SA;
    ``inbound`` looks SAs up by SPI and destination and writes ``batch.sa[i]``.
    Both write ``batch.status[i]`` and never raise because of one bad packet.
    """

    name: str = ""

    @abc.abstractmethod
    def add_sa(self, index: int, sa: SA, direction: Direction, *, params: Any = None) -> None:
        """Install sa at index.  params, when given, is the same SA as ``struct ipsg_sa_params`` bytes
        (cdefs/esp/esp.h; the fastpath passes its copy of the region slot): an engine in C takes them
        as they are rather than encoding sa again, a Python engine ignores them."""

    @abc.abstractmethod
    def remove_sa(self, index: int) -> None:
        """Delete the SA and zero its keys."""

    @abc.abstractmethod
    def outbound(self, batch: Batch) -> None: ...

    @abc.abstractmethod
    def inbound(self, batch: Batch) -> None: ...

    @abc.abstractmethod
    def stats(self, index: int) -> SAStats: ...

    @abc.abstractmethod
    def engine_drops(self) -> dict[Status, int]:
        """Drops not charged to any SA (no SA, not ESP, unparseable)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and zero keys."""
