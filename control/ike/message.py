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

import functools
import ipaddress
import struct
from collections.abc import Callable
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
# Plain ints for the hot paths: IntFlag & runs in Python, and attribute access on an enum class goes
# through EnumType's __getattr__ hook (about ten times a module global); the codec did both dozens of
# times per message.
_RESPONSE, _INITIATOR = int(Flag.RESPONSE), int(Flag.INITIATOR)
_NONE, _IDI, _IDR, _TSI, _TSR = (int(t) for t in (PayloadType.NONE, PayloadType.IDi, PayloadType.IDr,
                                                   PayloadType.TSi, PayloadType.TSr))
_CERT, _CERTREQ, _SK, _SKF = (int(t) for t in (PayloadType.CERT, PayloadType.CERTREQ, PayloadType.SK,
                                                PayloadType.SKF))
_TS_IPV4, _TS_IPV6 = int(TsType.IPV4_ADDR_RANGE), int(TsType.IPV6_ADDR_RANGE)
_PROTO_IKE, _PROTO_AH_ESP = int(ProtocolId.IKE), (int(ProtocolId.AH), int(ProtocolId.ESP))


class ParseError(ValueError):
    """The bytes are not a well-formed IKEv2 message; ``notify`` is the RFC's answer to it."""

    authenticated = False       # set when the failure lies inside a verified SK payload (answerable)

    def __init__(self, reason: str, notify: int = Notify.INVALID_SYNTAX, data: bytes = b""):
        super().__init__(reason)
        self.notify = notify
        self.data = data


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


@dataclass
class KEPayload(Payload):
    ptype: ClassVar[int] = PayloadType.KE
    group: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> KEPayload:
        if len(data) < 4:
            raise ParseError("KE payload shorter than 4 bytes")
        return cls(struct.unpack_from("!H", data)[0], bytes(data[4:]))


@dataclass
class IDPayload(Payload):
    """IDi or IDr (``initiator`` says which)."""

    id_type: int = 0
    data: bytes = b""
    initiator: bool = True

    @property
    def type(self) -> int:
        return _IDI if self.initiator else _IDR

    def body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def parse_body(cls, data: bytes, initiator: bool = True) -> IDPayload:
        if len(data) < 4:
            raise ParseError("ID payload shorter than 4 bytes")
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
        if len(data) < 4:
            raise ParseError("AUTH payload shorter than 4 bytes")
        return cls(data[0], bytes(data[4:]))


@dataclass
class NoncePayload(Payload):
    ptype: ClassVar[int] = PayloadType.NONCE
    data: bytes = b""

    def body(self) -> bytes:
        return self.data

    @classmethod
    def parse_body(cls, data: bytes) -> NoncePayload:
        if not (NONCE_MIN <= len(data) <= NONCE_MAX):
            raise ParseError(f"nonce of {len(data)} bytes, expected {NONCE_MIN}..{NONCE_MAX}")
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
        if len(data) < 4:
            raise ParseError("Notify payload shorter than 4 bytes")
        proto, spi_size, ntype = struct.unpack_from("!BBH", data)
        if 4 + spi_size > len(data):
            raise ParseError("Notify SPI overruns the payload")
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
        if len(data) < 4:
            raise ParseError("Delete payload shorter than 4 bytes")
        proto, spi_size, n = struct.unpack_from("!BBH", data)
        if len(data) != 4 + spi_size * n:
            raise ParseError("Delete payload length does not match its SPI count")
        if proto == _PROTO_IKE:
            if not (spi_size == 0 and n == 0):
                raise ParseError("an IKE SA Delete carries no SPIs")
        else:
            if not (proto in _PROTO_AH_ESP and spi_size == 4):
                raise ParseError("Delete of an AH/ESP SA needs 4-byte SPIs")
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


@dataclass
class CertPayload(Payload):
    """CERT, or CERTREQ with ``request`` set; the body stays opaque here."""

    encoding: int = 0
    data: bytes = b""
    request: bool = False

    @property
    def type(self) -> int:
        return _CERTREQ if self.request else _CERT

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def parse_body(cls, data: bytes, request: bool = False) -> CertPayload:
        if len(data) < 1:
            raise ParseError("CERT/CERTREQ payload without an encoding")
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
        if len(data) < 4:
            raise ParseError("CP payload shorter than 4 bytes")
        out, pos = cls(data[0]), 4
        while pos < len(data):
            if len(data) - pos < 4:
                raise ParseError("truncated configuration attribute")
            atype, alen = struct.unpack_from("!HH", data, pos)
            if pos + 4 + alen > len(data):
                raise ParseError("configuration attribute overruns the CP payload")
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
        if len(data) < 4:
            raise ParseError("EAP message shorter than its 4-byte header")
        if struct.unpack_from("!H", data, 2)[0] != len(data):
            raise ParseError("EAP length does not match the payload")
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
        if not 1 <= self.number <= self.total <= 0xFFFF:
            raise ValueError(f"SKF fragment {self.number} of {self.total}: expected 1 <= number <= total")
        return struct.pack("!HH", self.number, self.total) + self.data

    @classmethod
    def parse_body(cls, data: bytes) -> SKFPayload:
        # RFC 7383 §2.5: numbers start at 1 and never exceed Total Fragments (so Total is at least 1);
        # how many fragments are too many is the reassembler's limit, not the codec's
        if len(data) < 4:
            raise ParseError("SKF payload shorter than 4 bytes")
        number, total = struct.unpack_from("!HH", data)
        if number < 1:
            raise ParseError("SKF fragment number 0")
        if number > total:
            raise ParseError(f"SKF fragment number {number} above Total Fragments {total}")
        if len(data) <= 4:
            raise ParseError("SKF payload without encrypted content")
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
    simple = _SIMPLE.get(ptype)
    if simple is not None:
        return simple.parse_body(body)
    if ptype == _IDI or ptype == _IDR:
        return IDPayload.parse_body(body, ptype == _IDI)
    if ptype == _TSI or ptype == _TSR:
        return TSPayload.parse_body(body, ptype == _TSI)
    if ptype == _CERT or ptype == _CERTREQ:
        return CertPayload.parse_body(body, ptype == _CERTREQ)
    if critical:
        raise ParseError(f"unsupported critical payload type {ptype}", Notify.UNSUPPORTED_CRITICAL_PAYLOAD,
                         bytes([ptype]))
    return UnknownPayload(ptype, bytes(body), False)


# every known payload type's body parser, one dict lookup per payload (IDi/IDr, TSi/TSr and CERT/CERTREQ
# share a class and differ in a flag)
_PARSERS: dict[int, Callable[[bytes], Payload]] = {
    **{int(t): c.parse_body for t, c in _SIMPLE.items()},
    _IDI: functools.partial(IDPayload.parse_body, initiator=True),
    _IDR: functools.partial(IDPayload.parse_body, initiator=False),
    _TSI: functools.partial(TSPayload.parse_body, initiator=True),
    _TSR: functools.partial(TSPayload.parse_body, initiator=False),
    _CERT: functools.partial(CertPayload.parse_body, request=False),
    _CERTREQ: functools.partial(CertPayload.parse_body, request=True),
}


def parse_payloads(first: int, data: bytes) -> list[Payload]:
    """A payload chain starting with type ``first``; an SK/SKF payload must be the last one."""
    out: list[Payload] = []
    ptype, pos, size, unpack = first, 0, len(data), _GENERIC.unpack_from
    while ptype != _NONE:
        if size - pos < 4:
            raise ParseError("truncated generic payload header")
        nxt, flags, plen = unpack(data, pos)
        if not (4 <= plen <= size - pos):
            raise ParseError("payload length out of range")
        body = data[pos + 4:pos + plen]
        if ptype == _SK or ptype == _SKF:
            # the SK payload's next-payload field names the first *inner* payload
            if pos + plen != len(data):
                raise ParseError("SK payload is not the last payload")
            p: Payload = SKPayload.parse_body(body) if ptype == _SK else SKFPayload.parse_body(body)
            p.first = nxt  # type: ignore[attr-defined]
            out.append(p)
            return out
        parse = _PARSERS.get(ptype)
        p = parse(body) if parse is not None else _parse_one(ptype, bool(flags & 0x80), body)
        out.append(p)
        pos += plen
        ptype = nxt
    if pos != len(data):
        raise ParseError("bytes after the last payload")
    return out


def serialize_payloads(payloads: list[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, encoded chain)."""
    parts = []
    pack, last = _GENERIC.pack, len(payloads) - 1
    types = [p.type for p in payloads]
    for i, p in enumerate(payloads):
        if isinstance(p, _ENCRYPTED):
            if i != last:
                raise ValueError("the SK payload must be the last payload")
            nxt = p.first
        else:
            nxt = types[i + 1] if i < last else _NONE
        body = p.body()
        if len(body) + 4 > 0xFFFF:
            raise ValueError("payload too long")
        parts.append(pack(nxt, 0x80 if p.critical else 0, 4 + len(body)))
        parts.append(body)
    return (types[0] if payloads else _NONE), b"".join(parts)


_GENERIC = struct.Struct("!BBH")
_ENCRYPTED = (SKPayload, SKFPayload)     # a tuple: isinstance with an X | Y union is slower, and built per call


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
        return bool(self.flags & _RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & _INITIATOR)

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
    def parse(cls, data: bytes, hdr: Header | None = None) -> Message:
        """``hdr``: what ``parse_header(data)`` returned already (the task manager reads it first)."""
        if hdr is None:
            hdr = parse_header(data)
        return cls(hdr.spi_i, hdr.spi_r, hdr.exchange, hdr.flags, hdr.message_id,
                   parse_payloads(hdr.next_payload, data[HEADER_LEN:]), hdr.minor)

    @classmethod
    def parse_header_only(cls, data: bytes) -> Message:
        """The header fields of a message whose payloads did not parse (to answer it with an error)."""
        hdr = parse_header(data)
        return cls(hdr.spi_i, hdr.spi_r, hdr.exchange, hdr.flags, hdr.message_id, minor=hdr.minor)

    # small finders the tasks use
    def get(self, cls_: type, *, initiator: bool | None = None) -> Payload | None:
        if initiator is None:
            for p in self.payloads:
                if isinstance(p, cls_):
                    return p
            return None
        for p in self.payloads:
            if isinstance(p, cls_) and getattr(p, "initiator", None) == initiator:
                return p
        return None

    def notifies(self, ntype: int | None = None) -> list[NotifyPayload]:
        # the tasks ask several times per message; a class identity check is cheaper than isinstance
        # (NotifyPayload has no subclasses)
        if ntype is None:
            return [p for p in self.payloads if p.__class__ is NotifyPayload]
        return [p for p in self.payloads if p.__class__ is NotifyPayload and p.notify_type == ntype]  # type: ignore[attr-defined]

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
    if len(data) < HEADER_LEN:
        raise ParseError("shorter than the IKE header")
    spi_i, spi_r, nxt, ver, ex, flags, mid, length = struct.unpack_from("!8s8sBBBBII", data)
    if ver >> 4 != 2:
        raise ParseError(f"IKE major version {ver >> 4}", Notify.INVALID_MAJOR_VERSION)
    if length != len(data):
        raise ParseError(f"header length {length} does not match the datagram's {len(data)} bytes")
    return Header(spi_i, spi_r, nxt, ver >> 4, ver & 0xF, ex, flags, mid, length)


__all__ = [
    "ParseError", "Message", "Header", "parse_header", "parse_payloads", "serialize_payloads", "Payload",
    "Transform", "Proposal", "SAPayload", "KEPayload", "IDPayload", "AuthPayload", "NoncePayload", "NotifyPayload",
    "DeletePayload", "VendorPayload", "TrafficSelectorEntry", "TSPayload", "CertPayload", "CPPayload", "EAPPayload",
    "SKPayload", "SKFPayload", "UnknownPayload", "HEADER_LEN", "TransformType",
]
