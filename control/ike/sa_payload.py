"""The SA payload (RFC 7296 §3.3): proposals, their transforms and transform attributes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from control.ike.constants import ATTR_KEY_LENGTH, PayloadType
from control.ike.payloads import ParseError, Payload


@dataclass
class Transform:
    type: int
    id: int
    key_length: int | None = None
    # attributes other than Key Length, kept as (type, value) so proposals round-trip
    other_attrs: list[tuple[int, bytes]] = field(default_factory=list)

    def serialize(self, last: bool) -> bytes:
        attrs = b""
        if self.key_length is not None:
            attrs += struct.pack("!HH", 0x8000 | ATTR_KEY_LENGTH, self.key_length)
        for atype, value in self.other_attrs:
            if atype & 0x8000:          # TV: stored with bit 15 set and its 2-byte value
                attrs += struct.pack("!H", atype) + value
            else:
                attrs += struct.pack("!HH", atype, len(value)) + value
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id) + attrs

    @classmethod
    def parse(cls, data: bytes) -> tuple[Transform, bool, int]:
        """One transform from the front of data: (transform, is_last, bytes used)."""
        if len(data) < 8:
            raise ParseError("transform shorter than 8 bytes")
        last, _, tlen, ttype, _, tid = struct.unpack_from("!BBHBBH", data)
        if last not in (0, 3):
            raise ParseError(f"transform last-substructure field {last}, expected 0 or 3")
        if not (8 <= tlen <= len(data)):
            raise ParseError("transform length out of range")
        t = cls(ttype, tid)
        pos = 8
        while pos < tlen:
            if tlen - pos < 4:
                raise ParseError("truncated transform attribute")
            atype, aval = struct.unpack_from("!HH", data, pos)
            pos += 4
            if atype & 0x8000:          # TV format: the value is the length field
                atype &= 0x7FFF
                if atype == ATTR_KEY_LENGTH:
                    if t.key_length is not None:
                        raise ParseError("duplicate key length attribute")
                    t.key_length = aval
                else:
                    t.other_attrs.append((atype | 0x8000, struct.pack("!H", aval)))
            else:
                if aval > tlen - pos:
                    raise ParseError("transform attribute overruns its transform")
                if atype == ATTR_KEY_LENGTH:
                    raise ParseError("key length attribute must use the TV format")
                t.other_attrs.append((atype, bytes(data[pos:pos + aval])))
                pos += aval
        return t, last == 0, tlen


@dataclass
class Proposal:
    num: int
    protocol: int
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)

    def serialize(self, last: bool) -> bytes:
        body = b"".join(t.serialize(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        length = 8 + len(self.spi) + len(body)
        return struct.pack("!BBHBBBB", 0 if last else 2, 0, length, self.num, self.protocol, len(self.spi),
                           len(self.transforms)) + self.spi + body

    @classmethod
    def parse(cls, data: bytes) -> tuple[Proposal, bool, int]:
        if len(data) < 8:
            raise ParseError("proposal shorter than 8 bytes")
        last, _, plen, num, proto, spi_size, ntrans = struct.unpack_from("!BBHBBBB", data)
        if last not in (0, 2):
            raise ParseError(f"proposal last-substructure field {last}, expected 0 or 2")
        if not (8 + spi_size <= plen <= len(data)):
            raise ParseError("proposal length out of range")
        spi = bytes(data[8:8 + spi_size])
        p = cls(num, proto, spi)
        pos = 8 + spi_size
        done = False
        while pos < plen:
            if done:
                raise ParseError("data after the last transform of a proposal")
            t, done, used = Transform.parse(data[pos:plen])
            p.transforms.append(t)
            pos += used
        if not (done or ntrans == 0):
            raise ParseError("proposal ends without a last transform")
        if len(p.transforms) != ntrans:
            raise ParseError(f"proposal says {ntrans} transforms, carries {len(p.transforms)}")
        return p, last == 0, plen

    def of_type(self, ttype: int) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]


@dataclass
class SAPayload(Payload):
    ptype: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)

    def body(self) -> bytes:
        return b"".join(p.serialize(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def parse_body(cls, data: bytes) -> SAPayload:
        if len(data) <= 0:
            raise ParseError("SA payload without proposals")
        out = cls()
        pos, done = 0, False
        while pos < len(data):
            if done:
                raise ParseError("data after the last proposal")
            p, done, used = Proposal.parse(data[pos:])
            if out.proposals:
                expected = out.proposals[-1].num
                if p.num not in (expected, expected + 1):
                    raise ParseError("proposal numbers must start at 1 and rise by one")
            out.proposals.append(p)
            pos += used
        if not done:
            raise ParseError("SA payload ends without a last proposal")
        # An offer numbers its proposals from 1; an answer carries the one proposal it accepted, under
        # the number it had in the offer (RFC 7296 3.3.1), so a lone proposal may have any number.
        if not (out.proposals[0].num == 1 or (len(out.proposals) == 1 and out.proposals[0].num > 0)):
            raise ParseError("proposal numbers must start at 1 and rise by one")
        return out


__all__ = ["Transform", "Proposal", "SAPayload"]
