"""Deleting CHILD SAs with INFORMATIONAL Delete payloads (RFC 7296 §1.4.1).

A Delete names the sender's *inbound* SPIs; the responder removes those pairs and answers with its
own inbound SPIs of the same pairs, except for pairs it is deleting itself at the same time.  One Delete
payload carries one protocol's SPIs (RFC 7296 §3.11): ESP and AH children go in a payload each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.constants import ExchangeType, ProtocolId
from control.ike.events import ChildState, ChildStatus
from control.ike.message import Message
from control.ike.payloads import DeletePayload, Payload
from control.ike.tasks.base import Initiator, Responder

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


class ChildDeleteInitiator(Initiator):
    exchange = ExchangeType.INFORMATIONAL
    concurrent = True           # may share a Message ID window with other such exchanges

    def __init__(self, spis: list[int], reason: str = "deleted", orphans: list[ChildState] | None = None):
        self.spis = spis
        self.reason = reason
        self.orphans = list(orphans or [])      # pairs the peer installed that we never did
        self.children: list[ChildState] = []

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        self.children = [c for c in sa.children if c.spi_in in self.spis and c.status != ChildStatus.DELETING]
        victims = self.children + self.orphans
        if not victims:
            return None
        for c in self.children:
            c.status = ChildStatus.DELETING
        return _deletes(victims)

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        for c in self.children:
            sa.remove_child(c, self.reason)
        return False


def _deletes(children: list[ChildState]) -> list[Payload]:
    """Delete payloads for children's inbound SPIs, one per protocol (ESP first)."""
    out: list[Payload] = []
    for proto in (ProtocolId.ESP, ProtocolId.AH):
        spis = [c.spi_in.to_bytes(4, "big") for c in children if c.config.protocol == proto]
        if spis:
            out.append(DeletePayload(proto, spis, 4))
    return out


def _creating(sa: IkeSA) -> bool:
    return any(t.creates_child for t in sa.queued(Initiator))


class ChildDeleteResponder(Responder):
    exchange = ExchangeType.INFORMATIONAL

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        ours: list[ChildState] = []
        for d in (p for p in msg.payloads if isinstance(p, DeletePayload)):
            if d.protocol not in (ProtocolId.ESP, ProtocolId.AH):
                sa.stats["delete_unsupported_protocol"] += 1
                continue
            for spi in d.spis:
                c = sa.find_child(spi_out=int.from_bytes(spi, "big"))
                if c is not None and c.config.protocol != d.protocol:
                    c = None            # SPIs are per protocol: an AH SPI does not name an ESP SA
                if c is None:
                    sa.stats["delete_unknown_spi"] += 1
                    if _creating(sa):
                        # maybe a CHILD SA whose CREATE_CHILD_SA response we have not seen yet
                        sa.early_deletes.add(int.from_bytes(spi, "big"))
                    continue
                if c.status != ChildStatus.DELETING:      # a simultaneous delete gets no Delete back
                    ours.append(c)
                sa.remove_child(c, "deleted by the peer")
        return _deletes(ours)


__all__ = ["ChildDeleteInitiator", "ChildDeleteResponder"]
