"""IKE messages the tests build by hand, for the code that meets a request before any IkeSA exists
(the responder gate, the daemon's intake)."""

from __future__ import annotations

import os

from control.ike.constants import ExchangeType, Flag, Notify
from control.ike.message import Message
from control.ike.payloads import NoncePayload, NotifyPayload


def init_request(spi=None, cookie=None, nonce=None) -> bytes:
    """A bare IKE_SA_INIT request (zero responder SPI): a COOKIE notify first when ``cookie`` is given,
    then a nonce (random unless given); a random initiator SPI unless given."""
    payloads = [NotifyPayload(Notify.COOKIE, cookie)] if cookie is not None else []
    payloads.append(NoncePayload(nonce or os.urandom(32)))
    return Message(spi or os.urandom(8), bytes(8), ExchangeType.IKE_SA_INIT, Flag.INITIATOR, 0,
                   payloads).serialize()
