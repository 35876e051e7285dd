"""The payload chain (RFC 7296 §3.2): generic payload headers, and which class parses which type.

``parse_payloads``/``serialize_payloads`` run for a message's clear payloads and again for the
decrypted inner payloads of an SK payload.  An unknown payload type is kept as ``UnknownPayload``
unless its critical bit is set (UNSUPPORTED_CRITICAL_PAYLOAD, §2.5).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from control.ike.constants import Notify, PayloadType
from control.ike.payloads import (
    AuthPayload,
    CertPayload,
    CPPayload,
    DeletePayload,
    EAPPayload,
    IDPayload,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    ParseError,
    Payload,
    SKFPayload,
    SKPayload,
    UnknownPayload,
    VendorPayload,
)
from control.ike.sa_payload import SAPayload
from control.ike.ts_payload import TSPayload

_NONE, _IDI, _IDR, _TSI, _TSR = (int(t) for t in (PayloadType.NONE, PayloadType.IDi, PayloadType.IDr,
                                                   PayloadType.TSi, PayloadType.TSr))
_CERT, _CERTREQ, _SK, _SKF = (int(t) for t in (PayloadType.CERT, PayloadType.CERTREQ, PayloadType.SK,
                                                PayloadType.SKF))


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


__all__ = ["parse_payloads", "serialize_payloads"]
