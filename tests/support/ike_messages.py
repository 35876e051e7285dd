"""IKE messages the tests build by hand, for the code that meets a request before any IkeSA exists
(the responder gate, the daemon's intake)."""

from __future__ import annotations

import os
import struct

from control.ike.constants import ExchangeType, Flag, Notify
from control.ike.message import Message
from control.ike.payloads import NoncePayload, NotifyPayload
from control.ike.sa import IkeSA
from support.ike_pair import cfgs


def init_request(spi=None, cookie=None, nonce=None) -> bytes:
    """A bare IKE_SA_INIT request (zero responder SPI): a COOKIE notify first when ``cookie`` is given,
    then a nonce (random unless given); a random initiator SPI unless given."""
    payloads = [NotifyPayload(Notify.COOKIE, cookie)] if cookie is not None else []
    payloads.append(NoncePayload(nonce or os.urandom(32)))
    return Message(spi or os.urandom(8), bytes(8), ExchangeType.IKE_SA_INIT, Flag.INITIATOR, 0,
                   payloads).serialize()


def full_init(spi: bytes | None = None, responder: str = "198.51.100.1") -> bytes:
    """A real IKE_SA_INIT request (SA, KE, Nonce) from our own initiator core; ``spi`` replaces its SPI."""
    ca, _ = cfgs()
    i = IkeSA(ca, initiator=True, local=("192.0.2.1", 500), remote=(responder, 500))
    i.initiate(0.0)
    data = i.datagrams_to_send()[0].data
    return (spi or os.urandom(8)) + data[8:]


def with_cookie(req: bytes, cookie: bytes) -> bytes:
    """``req`` retried with a COOKIE notify as its first payload (RFC 7296 §2.6)."""
    notify = struct.pack("!BBHBBH", req[16], 0, 8 + len(cookie), 0, 0, Notify.COOKIE) + cookie
    body = notify + req[28:]
    return req[:16] + bytes([41]) + req[17:24] + struct.pack("!I", 28 + len(body)) + body
