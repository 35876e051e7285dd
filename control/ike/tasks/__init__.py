"""One module per exchange, as strongSwan's ``sa/ikev2/tasks``.

A task builds its request (``build_request``, returning None when nothing is left
to do) and handles the response (``process_response``, returning True when it
resent its request itself), or as responder turns a request into response
payloads (``process_request``, then optionally ``after_response``).  Tasks raise
``IkeError`` only for errors that end the IKE SA; Message IDs, retransmission and
timers stay in ``IkeSA``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import ExchangeType, Notify, ProtocolId
from control.ike.message import DeletePayload, Message, SAPayload

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


_RESPONDERS: tuple | None = None


def _responders() -> tuple:
    """The responder classes, imported once on first use (their modules import control.ike.sa, which
    imports this package); an import statement per call cost a busy responder microseconds each."""
    global _RESPONDERS
    if _RESPONDERS is None:
        from control.ike.sa import State
        from control.ike.tasks.child_create import ChildCreateResponder
        from control.ike.tasks.child_delete import ChildDeleteResponder
        from control.ike.tasks.child_rekey import ChildRekeyResponder
        from control.ike.tasks.ike_delete import IkeDeleteResponder
        from control.ike.tasks.ike_dpd import InformationalResponder, Refuse
        from control.ike.tasks.ike_rekey import IkeRekeyResponder
        _RESPONDERS = (State, ChildCreateResponder, ChildDeleteResponder, ChildRekeyResponder, IkeDeleteResponder,
                       InformationalResponder, Refuse, IkeRekeyResponder)
    return _RESPONDERS


def dispatch(sa: IkeSA, msg: Message) -> object:
    """The responder task for a CREATE_CHILD_SA or INFORMATIONAL request on an established IKE SA."""
    State, ChildCreateResponder, ChildDeleteResponder, ChildRekeyResponder, IkeDeleteResponder, \
        InformationalResponder, Refuse, IkeRekeyResponder = _responders()  # noqa: N806

    if msg.exchange == ExchangeType.CREATE_CHILD_SA:
        if sa.state != State.ESTABLISHED:
            return Refuse(Notify.TEMPORARY_FAILURE)     # being rekeyed or deleted (RFC 7296 §2.25)
        sa_p = msg.get(SAPayload)
        if isinstance(sa_p, SAPayload) and sa_p.proposals and sa_p.proposals[0].protocol == ProtocolId.IKE:
            return IkeRekeyResponder()
        if msg.notifies(Notify.REKEY_SA):
            return ChildRekeyResponder()
        return ChildCreateResponder()
    deletes = [p for p in msg.payloads if isinstance(p, DeletePayload)]
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        return IkeDeleteResponder()
    if deletes:
        return ChildDeleteResponder()
    return InformationalResponder()
