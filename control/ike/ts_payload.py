"""Traffic selectors on the wire (RFC 7296 §3.13): TSi/TSr payloads and their selector entries.

Which selectors a CHILD SA accepts (narrowing) is ``control.ike.ts``; this module only encodes them.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from dataclasses import dataclass, field

from control.ike.constants import PayloadType, TsType
from control.ike.payloads import ParseError, Payload

_TSI, _TSR = int(PayloadType.TSi), int(PayloadType.TSr)
_TS_IPV4, _TS_IPV6 = int(TsType.IPV4_ADDR_RANGE), int(TsType.IPV6_ADDR_RANGE)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TrafficSelectorEntry:
    """One selector of a TSi/TSr payload (RFC 7296 §3.13.1)."""

    start: IPAddress
    end: IPAddress
    proto: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> int:
        return _TS_IPV4 if self.start.version == 4 else _TS_IPV6

    def serialize(self) -> bytes:
        size = 16 if self.start.version == 4 else 40
        return (struct.pack("!BBHHH", self.ts_type, self.proto, size, self.start_port, self.end_port)
                + self.start.packed + self.end.packed)

    @classmethod
    def parse(cls, data: bytes) -> tuple[TrafficSelectorEntry, int]:
        if len(data) < 8:
            raise ParseError("traffic selector shorter than 8 bytes")
        ts_type, _, size = _TS_HEAD.unpack_from(data)
        if ts_type == _TS_IPV4:
            alen = 4
        elif ts_type == _TS_IPV6:
            alen = 16
        else:
            raise ParseError(f"unsupported traffic selector type {ts_type}")
        if not (size == 8 + 2 * alen and size <= len(data)):
            raise ParseError("traffic selector length does not fit its type")
        # selectors are immutable and peers send the same few again and again: one object per encoding
        return _selector(bytes(data[:size])), size

    @classmethod
    def from_network(cls, net: str, proto: int = 0, start_port: int = 0, end_port: int = 65535
                     ) -> TrafficSelectorEntry:
        n = ipaddress.ip_network(net, strict=False)
        return cls(n[0], n[-1], proto, start_port, end_port)


_TS_HEAD = struct.Struct("!BBH")


@functools.lru_cache(maxsize=4096)
def _selector(raw: bytes) -> TrafficSelectorEntry:
    """A checked selector encoding (type, length) as an entry."""
    _, proto, _, sp, ep = struct.unpack_from("!BBHHH", raw)
    alen = (len(raw) - 8) // 2
    make = ipaddress.IPv4Address if alen == 4 else ipaddress.IPv6Address
    return TrafficSelectorEntry(make(raw[8:8 + alen]), make(raw[8 + alen:]), proto, sp, ep)


@dataclass
class TSPayload(Payload):
    """TSi or TSr (``initiator`` says which)."""

    selectors: list[TrafficSelectorEntry] = field(default_factory=list)
    initiator: bool = True

    @property
    def type(self) -> int:
        return _TSI if self.initiator else _TSR

    def body(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join(s.serialize() for s in self.selectors)

    @classmethod
    def parse_body(cls, data: bytes, initiator: bool = True) -> TSPayload:
        if len(data) < 4:
            raise ParseError("TS payload shorter than 4 bytes")
        n = data[0]
        if n < 1:
            raise ParseError("TS payload with no selectors")
        out, pos = cls([], initiator), 4
        for _ in range(n):
            ts, used = TrafficSelectorEntry.parse(data[pos:])
            out.selectors.append(ts)
            pos += used
        if pos != len(data):
            raise ParseError("TS payload has bytes after its last selector")
        return out


__all__ = ["TrafficSelectorEntry", "TSPayload", "IPAddress"]
