"""IKE_INTERMEDIATE (RFC 9242) carrying the RFC 9370 additional key exchanges, one per exchange in
ADDKE1..ADDKE7 order, between IKE_SA_INIT and IKE_AUTH.

Each exchange is protected with the keys of the step before it; once it completes both sides mix its
shared secret into new SA keys (``derive_addke_keys``).  The responder switches keys only after its
response has been encoded (``after_response``), the initiator after it has read that response.  The
messages themselves are folded into IntAuth by the IKE SA's encode/decode (control.ike.intermediate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import DhGroup, ExchangeType, Notify
from control.ike.crypto import CryptoError, KeyExchange, derive_addke_keys
from control.ike.events import IkeError
from control.ike.payloads import KEPayload, Payload
from control.ike.tasks.base import Initiator, Responder

if TYPE_CHECKING:
    from control.ike.message import Message
    from control.ike.sa import IkeSA


def _name(group: int) -> str:
    try:
        return DhGroup(group).name
    except ValueError:
        return f"group {group}"


def _update_keys(sa: IkeSA, shared: bytes) -> None:
    assert sa.suite is not None and sa.keys is not None
    sa.addke_todo.pop(0)
    sa.addke_done += 1
    sa.set_keys(derive_addke_keys(sa.suite, sa.keys, sa.nonce_i, sa.nonce_r, shared, sa.spi_i, sa.spi_r))


class IkeIntermediateInitiator(Initiator):
    exchange = ExchangeType.IKE_INTERMEDIATE

    def __init__(self) -> None:
        self.ke: KeyExchange | None = None

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        if not sa.addke_todo:
            return None
        self.ke = KeyExchange(sa.addke_todo[0])
        return [KEPayload(self.ke.group, self.ke.public)]

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        assert self.ke is not None
        err = next((n for n in msg.notifies() if n.notify_type < 16384), None)
        n = sa.addke_done + 1
        if err is not None:
            raise IkeError(err.notify_type, f"IKE_INTERMEDIATE (additional key exchange {n}, "
                           f"{_name(self.ke.group)}) refused by the peer", received=True)
        ke = msg.get(KEPayload)
        if not isinstance(ke, KEPayload) or ke.group != self.ke.group:
            raise IkeError(Notify.INVALID_SYNTAX, f"IKE_INTERMEDIATE response lacks the KE payload of "
                           f"additional key exchange {n} ({_name(self.ke.group)})")
        try:
            shared = self.ke.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        _update_keys(sa, shared)
        if sa.addke_todo:
            sa.queue_front(IkeIntermediateInitiator())
        return False


class IkeIntermediateResponder(Responder):
    exchange = ExchangeType.IKE_INTERMEDIATE

    def __init__(self) -> None:
        self.shared = b""

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        group = sa.addke_todo[0]
        n = sa.addke_done + 1
        ke = msg.get(KEPayload)
        if not isinstance(ke, KEPayload):
            raise IkeError(Notify.INVALID_SYNTAX, f"IKE_INTERMEDIATE request without the KE payload of "
                           f"additional key exchange {n}")
        if ke.group != group:
            raise IkeError(Notify.INVALID_SYNTAX, f"IKE_INTERMEDIATE KE payload of {_name(ke.group)} where "
                           f"additional key exchange {n} is {_name(group)}")
        mine = KeyExchange(group, responder=True)
        try:
            self.shared = mine.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        return [KEPayload(group, mine.public)]

    def after_response(self, sa: IkeSA, now: float) -> None:
        # the response went out under the old keys; what follows uses the new ones
        _update_keys(sa, self.shared)


__all__ = ["IkeIntermediateInitiator", "IkeIntermediateResponder"]
