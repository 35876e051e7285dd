"""The two kinds of task (one per exchange, as strongSwan's ``tasks/``): what the IKE SA's manager may ask.

An ``Initiator`` is an exchange we start: the manager queues it, asks ``build_request`` for the payloads
when the Message ID window lets it go, retransmits, hands the response to ``process_response`` and, when
retransmits run out, calls ``give_up``. A ``Responder`` answers one request of the peer's in
``process_request``; ``after_response`` runs once that answer is on its way. Tasks never see Message IDs,
timers or sockets: those stay in the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from control.ike.message import Message
    from control.ike.payloads import Payload
    from control.ike.sa import IkeSA


class Initiator:
    exchange: ClassVar[int]
    concurrent: ClassVar[bool] = False      # may share a Message ID window with other concurrent exchanges
    on_rekeyed_sa: ClassVar[bool] = False   # may still run on an IKE SA that a rekey replaced
    creates_child: ClassVar[bool] = False   # creates a CHILD SA (a Delete waits while one is queued)
    gives_up_alone: ClassVar[bool] = False  # retransmits running out ends only this task, not the IKE SA

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        """The request's payloads; None when the task has nothing left to do."""
        raise NotImplementedError

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        """Handle the response; True when another request of this task follows."""
        raise NotImplementedError

    def give_up(self, sa: IkeSA, reason: str) -> None:
        """Retransmits ran out (only called when ``gives_up_alone``)."""


class Responder:
    exchange: ClassVar[int]

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        """The payloads of our response."""
        raise NotImplementedError

    def after_response(self, sa: IkeSA, now: float) -> None:
        """Runs once the response is queued for sending."""
