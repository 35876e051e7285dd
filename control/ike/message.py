"""IKEv2 message codec (RFC 7296 §3): header, payload chain and every payload body.

Parsing is strict: every length field must agree with the bytes around it and
every fixed field must be in range.  Anything that does not fit raises
``ParseError`` and nothing else; the error carries the notify a responder
would answer with (INVALID_SYNTAX unless a more precise one applies), so the
task manager can drop the message or reply without guessing.

The SK payload (and SKF, RFC 7383) is kept opaque here: its ``first`` field is
the type of the first encrypted payload, and ``crypto`` protects/unprotects the
body.  ``parse_payloads``/``serialize_payloads`` run the same chain code for the
decrypted inner payloads.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from control.ike.constants import (
    ATTR_KEY_LENGTH,
    ExchangeType,
    Flag,
    Notify,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)

HEADER_LEN = 28
IKE_VERSION = 0x20
NONCE_MIN, NONCE_MAX = 16, 256
MAX_MESSAGE = 65535


class ParseError(ValueError):
    """The bytes are not a well-formed IKEv2 message; ``notify`` is the RFC's answer to it."""

    def __init__(self, reason: str, notify: int = Notify.INVALID_SYNTAX, data: bytes = b""):
        super().__init__(reason)
        self.notify = notify
        self.data = data


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise ParseError(reason)


# -- payloads ------------------------------------------------------------------------

class Payload:
    """A payload body; the generic header (next, critical, length) is the chain's business."""

    ptype: ClassVar[int] = 0
    critical: bool = False

    @property
    def type(self) -> int:
        return self.ptype

    def body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def parse_body(cls, data: bytes) -> Payload:
        raise NotImplementedError


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
        _need(len(data) >= 8, "transform shorter than 8 bytes")
        last, _, tlen, ttype, _, tid = struct.unpack_from("!BBHBBH", data)
        _need(last in (0, 3), f"transform last-substructure field {last}, expected 0 or 3")
        _need(8 <= tlen <= len(data), "transform length out of range")
        t = cls(ttype, tid)
        pos = 8
        while pos < tlen:
            _need(tlen - pos >= 4, "truncated transform attribute")
            atype, aval = struct.unpack_from("!HH", data, pos)
            pos += 4
            if atype & 0x8000:          # TV format: the value is the length field
                atype &= 0x7FFF
                if atype == ATTR_KEY_LENGTH:
                    _need(t.key_length is None, "duplicate key length attribute")
                    t.key_length = aval
                else:
                    t.other_attrs.append((atype | 0x8000, struct.pack("!H", aval)))
            else:
                _need(aval <= tlen - pos, "transform attribute overruns its transform")
                _need(atype != ATTR_KEY_LENGTH, "key length attribute must use the TV format")
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
        _need(len(data) >= 8, "proposal shorter than 8 bytes")
        last, _, plen, num, proto, spi_size, ntrans = struct.unpack_from("!BBHBBBB", data)
        _need(last in (0, 2), f"proposal last-substructure field {last}, expected 0 or 2")
        _need(8 + spi_size <= plen <= len(data), "proposal length out of range")
        spi = bytes(data[8:8 + spi_size])
        p = cls(num, proto, spi)
        pos = 8 + spi_size
        done = False
        while pos < plen:
            _need(not done, "data after the last transform of a proposal")
            t, done, used = Transform.parse(data[pos:plen])
            p.transforms.append(t)
            pos += used
        _need(done or ntrans == 0, "proposal ends without a last transform")
        _need(len(p.transforms) == ntrans, f"proposal says {ntrans} transforms, carries {len(p.transforms)}")
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
        _need(len(data) > 0, "SA payload without proposals")
        out = cls()
        pos, done = 0, False
        while pos < len(data):
            _need(not done, "data after the last proposal")
            p, done, used = Proposal.parse(data[pos:])
            if out.proposals:
                expected = out.proposals[-1].num
                _need(p.num in (expected, expected + 1), "proposal numbers must start at 1 and rise by one")
            out.proposals.append(p)
            pos += used
        _need(done, "SA payload ends without a last proposal")
        # An offer numbers its proposals from 1; an answer carries the one proposal it accepted, under
        # the number it had in the offer (RFC 7296 3.3.1), so a lone proposal may have any number.
        _need(out.proposals[0].num == 1 or (len(out.proposals) == 1 and out.proposals[0].num > 0),
              "proposal numbers must start at 1 and rise by one")
        return out


@dataclass
class KEPayload(Payload):
    ptype: ClassVar[int] = PayloadType.KE
    group: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> KEPayload:
        _need(len(data) >= 4, "KE payload shorter than 4 bytes")
        return cls(struct.unpack_from("!H", data)[0], bytes(data[4:]))


@dataclass
class IDPayload(Payload):
    """IDi or IDr (``initiator`` says which)."""

    id_type: int = 0
    data: bytes = b""
    initiator: bool = True

    @property
    def type(self) -> int:
        return PayloadType.IDi if self.initiator else PayloadType.IDr

    def body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def parse_body(cls, data: bytes, initiator: bool = True) -> IDPayload:
        _need(len(data) >= 4, "ID payload shorter than 4 bytes")
        return cls(data[0], bytes(data[4:]), initiator)


@dataclass
class AuthPayload(Payload):
    ptype: ClassVar[int] = PayloadType.AUTH
    method: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> AuthPayload:
        _need(len(data) >= 4, "AUTH payload shorter than 4 bytes")
        return cls(data[0], bytes(data[4:]))


@dataclass
class NoncePayload(Payload):
    ptype: ClassVar[int] = PayloadType.NONCE
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse_body(cls, data: bytes) -> NoncePayload:
        _need(NONCE_MIN <= len(data) <= NONCE_MAX, f"nonce of {len(data)} bytes, expected {NONCE_MIN}..{NONCE_MAX}")
        return cls(bytes(data))


@dataclass
class NotifyPayload(Payload):
    ptype: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int = 0
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type) + self.spi + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> NotifyPayload:
        _need(len(data) >= 4, "Notify payload shorter than 4 bytes")
        proto, spi_size, ntype = struct.unpack_from("!BBH", data)
        _need(4 + spi_size <= len(data), "Notify SPI overruns the payload")
        return cls(ntype, bytes(data[4 + spi_size:]), proto, bytes(data[4:4 + spi_size]))


@dataclass
class DeletePayload(Payload):
    ptype: ClassVar[int] = PayloadType.DELETE
    protocol: int = ProtocolId.IKE
    spis: list[bytes] = field(default_factory=list)
    spi_size: int = 0

    def body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, self.spi_size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def parse_body(cls, data: bytes) -> DeletePayload:
        _need(len(data) >= 4, "Delete payload shorter than 4 bytes")
        proto, spi_size, n = struct.unpack_from("!BBH", data)
        _need(len(data) == 4 + spi_size * n, "Delete payload length does not match its SPI count")
        if proto == ProtocolId.IKE:
            _need(spi_size == 0 and n == 0, "an IKE SA Delete carries no SPIs")
        else:
            _need(proto in (ProtocolId.AH, ProtocolId.ESP) and spi_size == 4,
                  "Delete of an AH/ESP SA needs 4-byte SPIs")
        return cls(proto, [bytes(data[4 + i * spi_size:4 + (i + 1) * spi_size]) for i in range(n)], spi_size)


@dataclass
class VendorPayload(Payload):
    ptype: ClassVar[int] = PayloadType.VENDOR
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse_body(cls, data: bytes) -> VendorPayload:
        return cls(bytes(data))


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
        return TsType.IPV4_ADDR_RANGE if self.start.version == 4 else TsType.IPV6_ADDR_RANGE

    def serialize(self) -> bytes:
        size = 16 if self.start.version == 4 else 40
        return (struct.pack("!BBHHH", self.ts_type, self.proto, size, self.start_port, self.end_port)
                + self.start.packed + self.end.packed)

    @classmethod
    def parse(cls, data: bytes) -> tuple[TrafficSelectorEntry, int]:
        _need(len(data) >= 8, "traffic selector shorter than 8 bytes")
        ts_type, proto, size, sp, ep = struct.unpack_from("!BBHHH", data)
        if ts_type == TsType.IPV4_ADDR_RANGE:
            alen = 4
        elif ts_type == TsType.IPV6_ADDR_RANGE:
            alen = 16
        else:
            raise ParseError(f"unsupported traffic selector type {ts_type}")
        _need(size == 8 + 2 * alen and size <= len(data), "traffic selector length does not fit its type")
        make = ipaddress.IPv4Address if alen == 4 else ipaddress.IPv6Address
        start = make(bytes(data[8:8 + alen]))
        end = make(bytes(data[8 + alen:8 + 2 * alen]))
        return cls(start, end, proto, sp, ep), size

    @classmethod
    def from_network(cls, net: str, proto: int = 0, start_port: int = 0, end_port: int = 65535
                     ) -> TrafficSelectorEntry:
        n = ipaddress.ip_network(net, strict=False)
        return cls(n[0], n[-1], proto, start_port, end_port)


@dataclass
class TSPayload(Payload):
    """TSi or TSr (``initiator`` says which)."""

    selectors: list[TrafficSelectorEntry] = field(default_factory=list)
    initiator: bool = True

    @property
    def type(self) -> int:
        return PayloadType.TSi if self.initiator else PayloadType.TSr

    def body(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join(s.serialize() for s in self.selectors)

    @classmethod
    def parse_body(cls, data: bytes, initiator: bool = True) -> TSPayload:
        _need(len(data) >= 4, "TS payload shorter than 4 bytes")
        n = data[0]
        _need(n >= 1, "TS payload with no selectors")
        out, pos = cls([], initiator), 4
        for _ in range(n):
            ts, used = TrafficSelectorEntry.parse(data[pos:])
            out.selectors.append(ts)
            pos += used
        _need(pos == len(data), "TS payload has bytes after its last selector")
        return out


@dataclass
class CertPayload(Payload):
    """CERT, or CERTREQ with ``request`` set; the body stays opaque here."""

    encoding: int = 0
    data: bytes = b""
    request: bool = False

    @property
    def type(self) -> int:
        return PayloadType.CERTREQ if self.request else PayloadType.CERT

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def parse_body(cls, data: bytes, request: bool = False) -> CertPayload:
        _need(len(data) >= 1, "CERT/CERTREQ payload without an encoding")
        return cls(data[0], bytes(data[1:]), request)


@dataclass
class CPPayload(Payload):
    ptype: ClassVar[int] = PayloadType.CP
    cfg_type: int = 1
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def body(self) -> bytes:
        return struct.pack("!B3x", self.cfg_type) + b"".join(
            struct.pack("!HH", t & 0x7FFF, len(v)) + v for t, v in self.attributes)

    @classmethod
    def parse_body(cls, data: bytes) -> CPPayload:
        _need(len(data) >= 4, "CP payload shorter than 4 bytes")
        out, pos = cls(data[0]), 4
        while pos < len(data):
            _need(len(data) - pos >= 4, "truncated configuration attribute")
            atype, alen = struct.unpack_from("!HH", data, pos)
            _need(pos + 4 + alen <= len(data), "configuration attribute overruns the CP payload")
            out.attributes.append((atype & 0x7FFF, bytes(data[pos + 4:pos + 4 + alen])))
            pos += 4 + alen
        return out


@dataclass
class EAPPayload(Payload):
    ptype: ClassVar[int] = PayloadType.EAP
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse_body(cls, data: bytes) -> EAPPayload:
        _need(len(data) >= 4, "EAP message shorter than its 4-byte header")
        _need(struct.unpack_from("!H", data, 2)[0] == len(data), "EAP length does not match the payload")
        return cls(bytes(data))


@dataclass
class SKPayload(Payload):
    """Encrypted and authenticated payload: IV || ciphertext || ICV, opaque to the codec."""

    ptype: ClassVar[int] = PayloadType.SK
    first: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse_body(cls, data: bytes) -> SKPayload:
        return cls(0, bytes(data))


@dataclass
class SKFPayload(Payload):
    """Encrypted fragment (RFC 7383): fragment number, total, then IV || ciphertext || ICV."""

    ptype: ClassVar[int] = PayloadType.SKF
    first: int = 0
    number: int = 1
    total: int = 1
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!HH", self.number, self.total) + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> SKFPayload:
        _need(len(data) >= 4, "SKF payload shorter than 4 bytes")
        number, total = struct.unpack_from("!HH", data)
        _need(1 <= number <= total, "SKF fragment number out of range")
        return cls(0, number, total, bytes(data[4:]))


@dataclass
class UnknownPayload(Payload):
    """A non-critical payload type we do not know: skipped by the tasks, kept for round trips."""

    ptype_value: int = 0
    data: bytes = b""
    critical: bool = False

    @property
    def type(self) -> int:
        return self.ptype_value

    def body(self) -> bytes:
        return self.data


_SIMPLE: dict[int, type[Payload]] = {
    PayloadType.SA: SAPayload, PayloadType.KE: KEPayload, PayloadType.AUTH: AuthPayload,
    PayloadType.NONCE: NoncePayload, PayloadType.NOTIFY: NotifyPayload, PayloadType.DELETE: DeletePayload,
    PayloadType.VENDOR: VendorPayload, PayloadType.CP: CPPayload, PayloadType.EAP: EAPPayload,
}


def _parse_one(ptype: int, critical: bool, body: bytes) -> Payload:
    if ptype in _SIMPLE:
        return _SIMPLE[ptype].parse_body(body)
    if ptype in (PayloadType.IDi, PayloadType.IDr):
        return IDPayload.parse_body(body, ptype == PayloadType.IDi)
    if ptype in (PayloadType.TSi, PayloadType.TSr):
        return TSPayload.parse_body(body, ptype == PayloadType.TSi)
    if ptype in (PayloadType.CERT, PayloadType.CERTREQ):
        return CertPayload.parse_body(body, ptype == PayloadType.CERTREQ)
    if critical:
        raise ParseError(f"unsupported critical payload type {ptype}", Notify.UNSUPPORTED_CRITICAL_PAYLOAD,
                         bytes([ptype]))
    return UnknownPayload(ptype, bytes(body), False)


def parse_payloads(first: int, data: bytes) -> list[Payload]:
    """A payload chain starting with type ``first``; an SK/SKF payload must be the last one."""
    out: list[Payload] = []
    ptype, pos = first, 0
    while ptype != PayloadType.NONE:
        _need(len(data) - pos >= 4, "truncated generic payload header")
        nxt, flags, plen = struct.unpack_from("!BBH", data, pos)
        _need(4 <= plen <= len(data) - pos, "payload length out of range")
        body = data[pos + 4:pos + plen]
        if ptype in (PayloadType.SK, PayloadType.SKF):
            # the SK payload's next-payload field names the first *inner* payload
            _need(pos + plen == len(data), "SK payload is not the last payload")
            p: Payload = SKPayload.parse_body(body) if ptype == PayloadType.SK else SKFPayload.parse_body(body)
            p.first = nxt  # type: ignore[attr-defined]
            out.append(p)
            return out
        p = _parse_one(ptype, bool(flags & 0x80), body)
        out.append(p)
        pos += plen
        ptype = nxt
    _need(pos == len(data), "bytes after the last payload")
    return out


def serialize_payloads(payloads: list[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, encoded chain)."""
    parts = []
    for i, p in enumerate(payloads):
        if isinstance(p, SKPayload | SKFPayload):
            if i != len(payloads) - 1:
                raise ValueError("the SK payload must be the last payload")
            nxt = p.first
        else:
            nxt = payloads[i + 1].type if i + 1 < len(payloads) else PayloadType.NONE
        body = p.body()
        if len(body) + 4 > 0xFFFF:
            raise ValueError("payload too long")
        parts.append(struct.pack("!BBH", nxt, 0x80 if p.critical else 0, 4 + len(body)) + body)
    return (payloads[0].type if payloads else PayloadType.NONE), b"".join(parts)


# -- messages ------------------------------------------------------------------------

@dataclass
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: list[Payload] = field(default_factory=list)
    minor: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flag.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & Flag.INITIATOR)

    def header(self, next_payload: int, length: int) -> bytes:
        return struct.pack("!8s8sBBBBII", self.spi_i, self.spi_r, next_payload, IKE_VERSION | (self.minor & 0xF),
                           self.exchange, self.flags, self.message_id, length)

    def serialize(self) -> bytes:
        first, body = serialize_payloads(self.payloads)
        total = HEADER_LEN + len(body)
        if total > MAX_MESSAGE:
            raise ValueError("IKE message too long")
        return self.header(first, total) + body

    @classmethod
    def parse(cls, data: bytes) -> Message:
        hdr = parse_header(data)
        msg = cls(hdr.spi_i, hdr.spi_r, hdr.exchange, hdr.flags, hdr.message_id, minor=hdr.minor)
        msg.payloads = parse_payloads(hdr.next_payload, memoryview(data)[HEADER_LEN:].tobytes())
        return msg

    @classmethod
    def parse_header_only(cls, data: bytes) -> Message:
        """The header fields of a message whose payloads did not parse (to answer it with an error)."""
        hdr = parse_header(data)
        return cls(hdr.spi_i, hdr.spi_r, hdr.exchange, hdr.flags, hdr.message_id, minor=hdr.minor)

    # small finders the tasks use
    def get(self, cls_: type, *, initiator: bool | None = None) -> Payload | None:
        for p in self.payloads:
            if isinstance(p, cls_) and (initiator is None or getattr(p, "initiator", None) == initiator):
                return p
        return None

    def notifies(self, ntype: int | None = None) -> list[NotifyPayload]:
        return [p for p in self.payloads
                if isinstance(p, NotifyPayload) and (ntype is None or p.notify_type == ntype)]

    def describe(self) -> str:
        """Exchange, direction and payload types, for logs (no key material)."""
        try:
            ex = ExchangeType(self.exchange).name
        except ValueError:
            ex = str(self.exchange)
        kind = "response" if self.is_response else "request"
        names = []
        for p in self.payloads:
            try:
                names.append(PayloadType(p.type).name)
            except ValueError:
                names.append(str(p.type))
        return f"{ex} {kind} {self.message_id} [{' '.join(names)}]"


@dataclass
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major: int
    minor: int
    exchange: int
    flags: int
    message_id: int
    length: int


def parse_header(data: bytes) -> Header:
    """The fixed IKE header, checked against the datagram's length."""
    _need(len(data) >= HEADER_LEN, "shorter than the IKE header")
    spi_i, spi_r, nxt, ver, ex, flags, mid, length = struct.unpack_from("!8s8sBBBBII", data)
    if ver >> 4 != 2:
        raise ParseError(f"IKE major version {ver >> 4}", Notify.INVALID_MAJOR_VERSION)
    _need(length == len(data), f"header length {length} does not match the datagram's {len(data)} bytes")
    return Header(spi_i, spi_r, nxt, ver >> 4, ver & 0xF, ex, flags, mid, length)


__all__ = [
    "ParseError", "Message", "Header", "parse_header", "parse_payloads", "serialize_payloads", "Payload",
    "Transform", "Proposal", "SAPayload", "KEPayload", "IDPayload", "AuthPayload", "NoncePayload", "NotifyPayload",
    "DeletePayload", "VendorPayload", "TrafficSelectorEntry", "TSPayload", "CertPayload", "CPPayload", "EAPPayload",
    "SKPayload", "SKFPayload", "UnknownPayload", "HEADER_LEN", "TransformType",
]
