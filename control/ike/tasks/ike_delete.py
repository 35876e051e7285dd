"""Deleting the IKE SA (RFC 7296 §1.4.1): a Delete payload for protocol IKE, answered with an empty
INFORMATIONAL; the IKE SA and all its CHILD SAs end on both sides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import ExchangeType, ProtocolId
from control.ike.events import State
from control.ike.message import Message
from control.ike.payloads import DeletePayload, Payload
from control.ike.tasks.base import Initiator, Responder

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


class IkeDeleteInitiator(Initiator):
    exchange = ExchangeType.INFORMATIONAL
    on_rekeyed_sa = True        # the Delete of a replaced IKE SA runs on that SA
    gives_up_alone = True       # an unanswered Delete ends the IKE SA its own way (give_up)

    def __init__(self, rekeyed: bool = False, reason: str | None = None, replaced: bool = False):
        self.rekeyed = rekeyed
        self.reason = reason        # for the IkeSaDeleted event (hard expiry, reauthentication...)
        self.replaced = replaced    # a reauthentication replaced this IKE SA: IkeSaDeleted.rekeyed

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        if sa.state == State.REKEYED and not self.rekeyed:
            return None
        if not self.rekeyed:
            sa.state = State.DELETING
        return [DeletePayload(ProtocolId.IKE)]

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        sa.dead(self.reason or ("rekeyed" if self.rekeyed else "deleted"), rekeyed=self.rekeyed or self.replaced)
        return False

    def give_up(self, sa: IkeSA, reason: str) -> None:
        # nobody answers our Delete: the SA is gone all the same (RFC 7296 §1.4.1)
        sa.dead(f"{self.reason or 'deleted'} ({reason})", rekeyed=self.rekeyed or self.replaced)


class IkeDeleteResponder(Responder):
    exchange = ExchangeType.INFORMATIONAL

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        return []

    def after_response(self, sa: IkeSA, now: float) -> None:
        sa.dead("deleted by the peer", rekeyed=sa.state == State.REKEYED)


__all__ = ["IkeDeleteInitiator", "IkeDeleteResponder"]
