"""ISAKMP messages on the wire (RFC 2408 §3): the fixed header and the payloads IKEv1 uses.

Parsing is strict: every length must agree with the bytes around it, every payload type must be one we
know.  Anything else raises ``DecodeError`` (and nothing else), whose text is the reason a caller counts
the drop under.  Each parsed payload keeps its bytes as received (``raw``, generic header included)
because the HASH payloads of RFC 2409 are computed over the payloads exactly as sent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from control.ikev1.constants import HEADER_LEN, ISAKMP_VERSION, Flag, PayloadType

MAX_MESSAGE = 65535
_HDR = struct.Struct("!8s8sBBBBII")
_GEN = struct.Struct("!BBH")


class DecodeError(ValueError):
    """Bytes that are not a well-formed ISAKMP message; the text says what is wrong."""


class Refused(Exception):
    """A well-formed message we do not accept (wrong HASH, no acceptable proposal, wrong identity,
    unexpected here); the text says why."""


# -- attributes (RFC 2408 §3.3) --------------------------------------------------------------------

Attr = tuple[int, int | bytes]      # (type, value): an int went as TV (basic), bytes as TLV (variable)


def encode_attrs(attrs: list[Attr]) -> bytes:
    out = bytearray()
    for atype, value in attrs:
        if isinstance(value, int):
            if 0 <= value <= 0xFFFF:
                out += struct.pack("!HH", 0x8000 | atype, value)
                continue
            value = value.to_bytes(max(4, (value.bit_length() + 7) // 8), "big")
        out += struct.pack("!HH", atype & 0x7FFF, len(value)) + value
    return bytes(out)


def decode_attrs(data: bytes) -> list[Attr]:
    attrs: list[Attr] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise DecodeError("truncated SA attribute")
        head, val = struct.unpack_from("!HH", data, pos)
        pos += 4
        if head & 0x8000:
            attrs.append((head & 0x7FFF, val))
        else:
            if len(data) - pos < val:
                raise DecodeError("SA attribute length exceeds its transform")
            attrs.append((head, data[pos:pos + val]))
            pos += val
    return attrs


def attr_int(value: int | bytes) -> int:
    return value if isinstance(value, int) else int.from_bytes(value, "big")


# -- payloads --------------------------------------------------------------------------------------

@dataclass
class Payload:
    """A payload whose body is plain data: KE, NONCE, HASH, SIG, VID, NAT-D (and NAT-OA)."""

    type: int
    data: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> Payload:
        return cls(ptype, body)


@dataclass
class Transform:
    num: int
    transform_id: int
    attrs: list[Attr] = field(default_factory=list)

    def attr(self, atype: int) -> int | None:
        for t, v in self.attrs:
            if t == atype:
                return attr_int(v)
        return None


@dataclass
class Proposal:
    num: int
    protocol: int
    spi: bytes
    transforms: list[Transform]


@dataclass
class SAPayload:
    """The SA payload: DOI, situation and proposals (each with its transforms)."""

    proposals: list[Proposal]
    doi: int = 1
    situation: int = 1
    raw: bytes = field(default=b"", compare=False, repr=False)
    type: int = PayloadType.SA

    def body(self) -> bytes:
        out = bytearray(struct.pack("!II", self.doi, self.situation))
        for i, p in enumerate(self.proposals):
            tbytes = bytearray()
            for j, t in enumerate(p.transforms):
                tb = struct.pack("!BBH", t.num, t.transform_id, 0) + encode_attrs(t.attrs)
                np = PayloadType.TRANSFORM if j + 1 < len(p.transforms) else 0
                tbytes += _GEN.pack(np, 0, 4 + len(tb)) + tb
            pb = struct.pack("!BBBB", p.num, p.protocol, len(p.spi), len(p.transforms)) + p.spi + tbytes
            np = PayloadType.PROPOSAL if i + 1 < len(self.proposals) else 0
            out += _GEN.pack(np, 0, 4 + len(pb)) + pb
        return bytes(out)

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> SAPayload:
        if len(body) < 8:
            raise DecodeError("SA payload shorter than DOI and situation")
        doi, situation = struct.unpack_from("!II", body)
        proposals = []
        pos, np = 8, PayloadType.PROPOSAL
        while np == PayloadType.PROPOSAL:
            if len(body) - pos < 8:
                raise DecodeError("truncated proposal payload")
            np, _, plen = _GEN.unpack_from(body, pos)
            if plen < 8 or pos + plen > len(body):
                raise DecodeError("proposal length does not fit the SA payload")
            num, proto, spi_size, ntrans = struct.unpack_from("!BBBB", body, pos + 4)
            if 8 + spi_size > plen:
                raise DecodeError("proposal SPI exceeds the proposal")
            spi = body[pos + 8:pos + 8 + spi_size]
            proposals.append(Proposal(num, proto, spi, _decode_transforms(body[pos + 8 + spi_size:pos + plen],
                                                                          ntrans)))
            pos += plen
            if np not in (0, PayloadType.PROPOSAL):
                raise DecodeError(f"proposal followed by payload type {np}")
        if pos != len(body):
            raise DecodeError("bytes after the last proposal")
        if not proposals:
            raise DecodeError("SA payload without a proposal")
        return cls(proposals, doi, situation)


def _decode_transforms(data: bytes, count: int) -> list[Transform]:
    out = []
    pos = 0
    for i in range(count):
        if len(data) - pos < 8:
            raise DecodeError("truncated transform payload")
        np, _, tlen = _GEN.unpack_from(data, pos)
        if tlen < 8 or pos + tlen > len(data):
            raise DecodeError("transform length does not fit its proposal")
        if np != (PayloadType.TRANSFORM if i + 1 < count else 0):
            raise DecodeError("transform chain disagrees with the proposal's transform count")
        num, tid = struct.unpack_from("!BB", data, pos + 4)
        out.append(Transform(num, tid, decode_attrs(data[pos + 8:pos + tlen])))
        pos += tlen
    if pos != len(data):
        raise DecodeError("bytes after the last transform")
    return out


@dataclass
class IDPayload:
    """Identification (RFC 2407 §4.6.2): phase 1 identities and quick mode's client IDs."""

    id_type: int
    data: bytes
    protocol: int = 0
    port: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)
    type: int = PayloadType.ID

    def body(self) -> bytes:
        return struct.pack("!BBH", self.id_type, self.protocol, self.port) + self.data

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> IDPayload:
        if len(body) < 4:
            raise DecodeError("ID payload shorter than its header")
        t, proto, port = struct.unpack_from("!BBH", body)
        return cls(t, body[4:], proto, port)


@dataclass
class CertPayload:
    """CERT and CERTREQ: an encoding octet and the certificate (or the CA) it names."""

    encoding: int
    data: bytes
    type: int = PayloadType.CERT
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> CertPayload:
        if len(body) < 1:
            raise DecodeError("certificate payload without its encoding")
        return cls(body[0], body[1:], ptype)


@dataclass
class NotifyPayload:
    notify_type: int
    protocol: int = 1
    spi: bytes = b""
    data: bytes = b""
    doi: int = 1
    raw: bytes = field(default=b"", compare=False, repr=False)
    type: int = PayloadType.NOTIFY

    def body(self) -> bytes:
        return struct.pack("!IBBH", self.doi, self.protocol, len(self.spi), self.notify_type) + self.spi + self.data

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> NotifyPayload:
        if len(body) < 8:
            raise DecodeError("notify payload shorter than its header")
        doi, proto, spi_size, ntype = struct.unpack_from("!IBBH", body)
        if 8 + spi_size > len(body):
            raise DecodeError("notify SPI exceeds the payload")
        return cls(ntype, proto, body[8:8 + spi_size], body[8 + spi_size:], doi)


@dataclass
class DeletePayload:
    """Delete (RFC 2408 §3.15): ISAKMP SAs by their cookie pair (16-byte SPI), IPsec SAs by 4-byte SPIs."""

    protocol: int
    spis: list[bytes]
    doi: int = 1
    raw: bytes = field(default=b"", compare=False, repr=False)
    type: int = PayloadType.DELETE

    def body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else (16 if self.protocol == 1 else 4)
        return struct.pack("!IBBH", self.doi, self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode(cls, ptype: int, body: bytes) -> DeletePayload:
        if len(body) < 8:
            raise DecodeError("delete payload shorter than its header")
        doi, proto, size, count = struct.unpack_from("!IBBH", body)
        if len(body) != 8 + size * count:
            raise DecodeError("delete payload length disagrees with its SPI count")
        return cls(proto, [body[8 + i * size:8 + (i + 1) * size] for i in range(count)], doi)


AnyPayload = Payload | SAPayload | IDPayload | CertPayload | NotifyPayload | DeletePayload

_DECODERS: dict[int, type] = {
    PayloadType.SA: SAPayload, PayloadType.KE: Payload, PayloadType.ID: IDPayload,
    PayloadType.CERT: CertPayload, PayloadType.CERTREQ: CertPayload, PayloadType.HASH: Payload,
    PayloadType.SIG: Payload, PayloadType.NONCE: Payload, PayloadType.NOTIFY: NotifyPayload,
    PayloadType.DELETE: DeletePayload, PayloadType.VID: Payload, PayloadType.NAT_D: Payload,
    PayloadType.NAT_OA: Payload,
}
_DECODERS = {int(k): v for k, v in _DECODERS.items()}


def encode_payloads(payloads: list[AnyPayload]) -> tuple[int, bytes]:
    """(type of the first payload, the chained payloads)."""
    out = bytearray()
    for i, p in enumerate(payloads):
        body = p.body()
        np = payloads[i + 1].type if i + 1 < len(payloads) else 0
        out += _GEN.pack(np, 0, 4 + len(body)) + body
    return (payloads[0].type if payloads else 0), bytes(out)


def decode_payloads(first: int, data: bytes, *, padded: bool = False) -> list[AnyPayload]:
    """The chain starting with payload type ``first``.  ``padded``: the chain came out of decryption and
    the cipher's padding may follow it (RFC 2409 appendix B)."""
    out: list[AnyPayload] = []
    pos, np = 0, first
    while np:
        decoder = _DECODERS.get(np)
        if decoder is None:
            raise DecodeError(f"unknown payload type {np}")
        if len(data) - pos < 4:
            raise DecodeError(f"truncated payload header (type {np})")
        nxt, _, plen = _GEN.unpack_from(data, pos)
        if plen < 4 or pos + plen > len(data):
            raise DecodeError(f"payload length {plen} does not fit the message (type {np})")
        p = decoder.decode(np, data[pos + 4:pos + plen])
        p.raw = data[pos:pos + plen]
        out.append(p)
        pos += plen
        np = nxt
    if pos != len(data) and not padded:
        raise DecodeError("bytes after the last payload")
    if padded and len(data) - pos > 255:
        raise DecodeError("more trailing bytes than any padding")
    return out


@dataclass
class Header:
    cookie_i: bytes
    cookie_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    def pack(self) -> bytes:
        return _HDR.pack(self.cookie_i, self.cookie_r, self.next_payload, ISAKMP_VERSION, self.exchange,
                         self.flags, self.message_id, self.length)


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise DecodeError("shorter than an ISAKMP header")
    ci, cr, np, version, exch, flags, mid, length = _HDR.unpack_from(data)
    if version >> 4 != 1:
        raise DecodeError(f"ISAKMP major version {version >> 4}, not 1")
    if length != len(data):
        raise DecodeError(f"header length {length} but {len(data)} bytes received")
    if flags & ~0x7:
        raise DecodeError(f"unknown header flags 0x{flags:02x}")
    if ci == bytes(8):
        raise DecodeError("initiator cookie is zero")
    return Header(ci, cr, np, exch, flags, mid, length)


@dataclass
class Message:
    """A cleartext ISAKMP message (``decode_message`` and ``encode_plain``); encrypted ones go through
    control.ikev1.protect, which needs the SA's keys and IV."""

    header: Header
    payloads: list[AnyPayload]

    def get(self, ptype: int) -> AnyPayload | None:
        return next((p for p in self.payloads if p.type == ptype), None)

    def all(self, ptype: int) -> list[AnyPayload]:
        return [p for p in self.payloads if p.type == ptype]


def decode_message(data: bytes) -> Message:
    hdr = decode_header(data)
    if hdr.encrypted:
        raise DecodeError("encrypted message where a cleartext one was expected")
    return Message(hdr, decode_payloads(hdr.next_payload, data[HEADER_LEN:]))


def encode_plain(cookie_i: bytes, cookie_r: bytes, exchange: int, message_id: int,
                 payloads: list[AnyPayload], flags: int = 0) -> bytes:
    first, body = encode_payloads(payloads)
    total = HEADER_LEN + len(body)
    if total > MAX_MESSAGE:
        raise ValueError("ISAKMP message too long")
    return Header(cookie_i, cookie_r, first, exchange, flags, message_id, total).pack() + body
