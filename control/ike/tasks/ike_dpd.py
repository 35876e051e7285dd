"""Liveness checks (RFC 7296 §2.4): an empty INFORMATIONAL request, and the responder for
INFORMATIONAL requests with no Delete (empty ones and status notifies), which are answered empty."""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import ExchangeType, notify_name
from control.ike.message import Message
from control.ike.payloads import NotifyPayload, Payload
from control.ike.tasks.base import Initiator, Responder
from control.ike.window import note_peer_window

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


class DpdInitiator(Initiator):
    exchange = ExchangeType.INFORMATIONAL
    concurrent = True           # may share a Message ID window with other such exchanges

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        sa.stats["dpd_sent"] += 1
        return []

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        sa.stats["dpd_answered"] += 1
        return False
    # no give_up: an unanswered liveness check fails the IKE SA (the peer is dead)


class InformationalResponder(Responder):
    exchange = ExchangeType.INFORMATIONAL

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        notifies = msg.notifies()
        if not msg.payloads:
            sa.stats["dpd_received"] += 1
        for n in notifies:
            sa.stats[f"notify_{notify_name(n.notify_type).lower()}"] += 1
        note_peer_window(sa, msg)
        return []


class Refuse(Responder):
    """Answers a request with one error notify and changes nothing (e.g. TEMPORARY_FAILURE)."""

    exchange = 0

    def __init__(self, notify: int):
        self.notify = notify

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        sa.stats[f"refused_{notify_name(self.notify).lower()}"] += 1
        return [NotifyPayload(self.notify)]


__all__ = ["DpdInitiator", "InformationalResponder", "Refuse"]
