"""Which responder task answers a request on an established IKE SA (by exchange and content)."""


from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import ExchangeType, Notify, ProtocolId
from control.ike.events import State
from control.ike.message import Message
from control.ike.payloads import DeletePayload
from control.ike.sa_payload import SAPayload
from control.ike.tasks.base import Responder
from control.ike.tasks.child_create import ChildCreateResponder
from control.ike.tasks.child_delete import ChildDeleteResponder
from control.ike.tasks.child_rekey import ChildRekeyResponder
from control.ike.tasks.ike_delete import IkeDeleteResponder
from control.ike.tasks.ike_dpd import InformationalResponder, Refuse
from control.ike.tasks.ike_rekey import IkeRekeyResponder

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


def dispatch(sa: IkeSA, msg: Message) -> Responder:
    """The responder task for a CREATE_CHILD_SA or INFORMATIONAL request on an established IKE SA."""
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
