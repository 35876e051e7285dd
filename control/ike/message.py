"""IKEv2 messages (RFC 7296 §3.1): the fixed header and a message's payloads.

Parsing is strict: every length field must agree with the bytes around it and
every fixed field must be in range.  Anything that does not fit raises
``ParseError`` and nothing else; the error carries the notify a responder
would answer with (INVALID_SYNTAX unless a more precise one applies), so the
task manager can drop the message or reply without guessing.

The payload bodies are in ``payloads``, ``sa_payload`` and ``ts_payload``, the
chain that links them in ``payload_chain``.  ``TrafficSelectorEntry`` is also
importable from here: the daemon, the configuration and the load generator
name it from this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from control.ike.constants import ExchangeType, Flag, Notify, PayloadType
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import NotifyPayload, ParseError, Payload
from control.ike.ts_payload import TrafficSelectorEntry

HEADER_LEN = 28
IKE_VERSION = 0x20
MAX_MESSAGE = 65535
# plain ints for the hot paths: IntFlag & runs in Python
_RESPONSE, _INITIATOR = int(Flag.RESPONSE), int(Flag.INITIATOR)


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


__all__ = ["Message", "Header", "parse_header", "HEADER_LEN", "IKE_VERSION", "MAX_MESSAGE", "TrafficSelectorEntry"]
