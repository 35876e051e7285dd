"""A batch of packets in one reusable buffer, as the engines consume it.

Packet i lives in slot i (``slot_size`` bytes) at absolute offset ``off[i]`` of
``buf`` and is ``len[i]`` bytes long.  Packets are loaded at ``headroom`` bytes
into their slot so an engine can prepend outer headers in place, and the rest
of the slot is tailroom for the ESP trailer and ICV.  Engines rewrite
off/len/status (and sa on inbound) without reallocating anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from fastpath.status import Status

DEFAULT_HEADROOM = 128   # outer IPv6 (40) + UDP (8) + ESP (8) + IV (16), rounded up
DEFAULT_TAILROOM = 320   # padding (<= 255) + pad length + next header + ICV (<= 32)


class Batch:
    def __init__(self, capacity: int = 256, mtu: int = 1600,
                 headroom: int = DEFAULT_HEADROOM, tailroom: int = DEFAULT_TAILROOM):
        self.capacity = capacity
        self.headroom = headroom
        self.tailroom = tailroom
        self.slot_size = (headroom + mtu + tailroom + 63) & ~63
        self.buf = np.zeros(capacity * self.slot_size, dtype=np.uint8)
        self.off = np.zeros(capacity, dtype=np.uint32)
        self.len = np.zeros(capacity, dtype=np.uint32)
        self.sa = np.zeros(capacity, dtype=np.uint32)
        self.status = np.zeros(capacity, dtype=np.uint8)
        self.n = 0

    @property
    def max_packet(self) -> int:
        """Largest packet that fits a slot with room left for ESP framing."""
        return self.slot_size - self.headroom - self.tailroom

    def clear(self) -> None:
        self.n = 0

    def append(self, packet: bytes, sa: int = 0) -> int:
        """Copy one packet into the next slot; returns its index."""
        if self.n >= self.capacity:
            raise IndexError("batch is full")
        if len(packet) > self.max_packet:
            raise ValueError(f"packet of {len(packet)} bytes does not fit a {self.slot_size}-byte slot")
        i = self.n
        start = i * self.slot_size + self.headroom
        self.buf[start:start + len(packet)] = np.frombuffer(packet, dtype=np.uint8)
        self.off[i] = start
        self.len[i] = len(packet)
        self.sa[i] = sa
        self.status[i] = Status.OK
        self.n += 1
        return i

    def extend(self, packets: Iterable[bytes], sa: int = 0) -> None:
        for p in packets:
            self.append(p, sa)

    def packet(self, i: int) -> bytes:
        start = int(self.off[i])
        return self.buf[start:start + int(self.len[i])].tobytes()

    def set_packet(self, i: int, data: bytes) -> None:
        """Replace packet i (used by the reference engine); must fit its slot."""
        slot = i * self.slot_size
        if len(data) > self.slot_size:
            raise ValueError("packet does not fit its slot")
        start = slot + self.headroom if self.headroom + len(data) <= self.slot_size else slot
        self.buf[start:start + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.off[i] = start
        self.len[i] = len(data)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[bytes]:
        return (self.packet(i) for i in range(self.n))

    def results(self) -> Iterator[tuple[Status, bytes]]:
        for i in range(self.n):
            yield Status(int(self.status[i])), self.packet(i)
