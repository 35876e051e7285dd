"""Payload bodies of IKEv2 (RFC 7296 §3.4-§3.16, RFC 7383 §2.5) and the one error the codec raises.

Each class encodes and strictly parses its own body; the generic header in front of it (next payload,
critical bit, length) belongs to the chain (``control.ike.payload_chain``).  SA and TS payloads, which
carry substructures of their own, live in ``sa_payload`` and ``ts_payload``.

The SK payload (and SKF, RFC 7383) is kept opaque here: its ``first`` field is the type of the first
encrypted payload, and ``control.ike.crypto`` protects/unprotects the body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from control.ike.constants import Notify, PayloadType, ProtocolId

NONCE_MIN, NONCE_MAX = 16, 256
# plain ints: attribute access on an enum class goes through EnumType's __getattr__ hook (about ten times
# a module global), and the codec asks dozens of times per message
_IDI, _IDR = int(PayloadType.IDi), int(PayloadType.IDr)
_CERT, _CERTREQ = int(PayloadType.CERT), int(PayloadType.CERTREQ)
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


_ID_ADDR_LEN = {1: 4, 5: 16}      # ID_IPV4_ADDR, ID_IPV6_ADDR (constants.IdType)


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
        # RFC 7296 §3.5: an address identity is exactly one address; anything else would reach the
        # identity checks and the logs as an address that is none
        want = _ID_ADDR_LEN.get(data[0])
        if want is not None and len(data) - 4 != want:
            raise ParseError(f"ID payload of type {data[0]} with {len(data) - 4} bytes, expected {want}")
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


__all__ = [
    "ParseError", "Payload", "KEPayload", "IDPayload", "AuthPayload", "NoncePayload", "NotifyPayload",
    "DeletePayload", "VendorPayload", "CertPayload", "CPPayload", "EAPPayload", "SKPayload", "SKFPayload",
    "UnknownPayload", "NONCE_MIN", "NONCE_MAX",
]
