"""CREATE_CHILD_SA for a new CHILD SA (RFC 7296 §1.3.1), with optional PFS: a KE payload when the
ESP proposals name a key exchange group, and KEYMAT = prf+(SK_d, g^ir | Ni | Nr) (§2.17).

The rekey of a CHILD SA (``child_rekey``) is the same exchange plus a REKEY_SA notify, so both
sides' negotiation lives here and the rekey tasks subclass it.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from cdefs.sa import Mode
from control.ike.child_keying import accept_selectors, ah_blocked, ah_nat_reason, child_choice, install_child
from control.ike.config import ChildConfig
from control.ike.constants import MIN_NEGOTIATED_SPI, ExchangeType, Notify, TransformType, notify_name
from control.ike.crypto import CryptoError, KeyExchange
from control.ike.events import ChildSaEstablished, ChildSaFailed, ChildState, IkeError
from control.ike.explain import child_offer, proposal_mismatch, ts_mismatch
from control.ike.message import Message
from control.ike.payloads import KEPayload, NoncePayload, NotifyPayload, Payload
from control.ike.proposals import (
    ProposalError,
    child_suite,
    offered_groups,
    proposal_acceptable,
    select_proposal,
    with_group,
)
from control.ike.sa_payload import Proposal, SAPayload
from control.ike.spi import random_esp_spi
from control.ike.tasks.base import Initiator, Responder
from control.ike.tasks.child_delete import ChildDeleteInitiator
from control.ike.ts import narrow
from control.ike.ts_payload import TrafficSelectorEntry, TSPayload
from control.ike.vip import remote_policy

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

NONCE_LEN = 32
MAX_KE_RETRIES = 2


def dh_group(p: Proposal) -> int:
    """The proposal's key exchange group, 0 for none."""
    return next((t.id for t in p.of_type(TransformType.DH) if t.id), 0)


def _child_payloads(msg: Message, what: str) -> tuple[SAPayload, NoncePayload, Payload | None, TSPayload, TSPayload]:
    """SA, Nonce, KE (optional) and TSi/TSr of a CREATE_CHILD_SA request or response."""
    sa_p, nonce, ke = msg.get(SAPayload), msg.get(NoncePayload), msg.get(KEPayload)
    tsi, tsr = msg.get(TSPayload, initiator=True), msg.get(TSPayload, initiator=False)
    if sa_p is None or nonce is None or tsi is None or tsr is None:
        raise IkeError(Notify.INVALID_SYNTAX, f"CREATE_CHILD_SA {what} lacks SA, Nonce, TSi or TSr")
    assert isinstance(sa_p, SAPayload) and isinstance(nonce, NoncePayload)
    assert isinstance(tsi, TSPayload) and isinstance(tsr, TSPayload)
    return sa_p, nonce, ke, tsi, tsr


class ChildCreateInitiator(Initiator):
    exchange = ExchangeType.CREATE_CHILD_SA
    concurrent = True           # may share a Message ID window with other such exchanges
    creates_child = True

    def __init__(self, config: ChildConfig | None):
        self.config = config
        self.group: int | None = None       # set by an INVALID_KE_PAYLOAD answer
        self.retries = 0
        self.state: ChildState | None = None
        self.nonce = b""
        self.ke: KeyExchange | None = None
        self.replaces: int | None = None    # a reauthentication's copy of this old pair (rekey_of)

    # hooks the rekey subclass overrides
    def rekey_of(self) -> int | None:
        return self.replaces

    def extra_payloads(self, sa: IkeSA) -> list[Payload]:
        return []

    def selectors(self) -> tuple[list[TrafficSelectorEntry], list[TrafficSelectorEntry]]:
        assert self.config is not None
        return list(self.config.local_ts), list(self.config.remote_ts)

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        assert self.config is not None
        if ah_blocked(sa, self.config):
            # not offered at all: AH behind a NAT (or with encap forced) cannot reach the peer intact
            sa.stats["child_ah_refused_nat"] += 1
            self.failed(sa, Notify.NO_PROPOSAL_CHOSEN, ah_nat_reason(sa, self.config.name), 0.0)
            return None
        self.state = ChildState(self.config, random_esp_spi())
        self.nonce = os.urandom(NONCE_LEN)
        spi = self.state.spi_in.to_bytes(4, "big")
        offer = [Proposal(p.num, self.config.protocol, spi, list(p.transforms)) for p in self.config.proposals]
        payloads = self.extra_payloads(sa)
        if self.config.mode == Mode.TRANSPORT:
            payloads.append(NotifyPayload(Notify.USE_TRANSPORT_MODE))
        payloads += [SAPayload(offer), NoncePayload(self.nonce)]
        groups = offered_groups(self.config.proposals)
        self.ke = None
        if groups:
            self.ke = KeyExchange(self.group if self.group in groups else groups[0])
            payloads.append(KEPayload(self.ke.group, self.ke.public))
        lts, rts = self.selectors()
        payloads += [TSPayload(lts, True), TSPayload(rts, False)]
        return payloads

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        assert self.config is not None and self.state is not None
        errors = [n for n in msg.notifies() if n.notify_type < 16384]
        if errors:
            n = errors[0]
            if n.notify_type == Notify.INVALID_KE_PAYLOAD and len(n.data) == 2:
                group = struct.unpack("!H", n.data)[0]
                if group in offered_groups(self.config.proposals) and group != (self.ke and self.ke.group) \
                        and self.retries < MAX_KE_RETRIES:
                    # a new exchange (new Message ID) with the group the peer asked for (RFC 7296 §1.3)
                    self.retries += 1
                    self.group = group
                    sa.queue_front(self)
                    return False
            self.failed(sa, n.notify_type, f"peer refused the CHILD SA: {notify_name(n.notify_type)}", now,
                        detail=tuple(child_offer(self.config)), received=True)
            return False
        try:
            event, nonce_r = self._accept(sa, msg)
        except IkeError as exc:
            self.failed(sa, exc.notify, str(exc), now, detail=exc.detail)
            if self.state.spi_out:
                # the peer installed what we refuse: delete it (RFC 7296 §1.3)
                sa.queue_front(ChildDeleteInitiator([], reason=str(exc), orphans=[self.state]))
            return False
        self.established(sa, event, nonce_r, now)
        if self.state.spi_out in sa.early_deletes:
            # the peer's Delete for this pair overtook the response: it is gone there, so here too
            sa.early_deletes.discard(self.state.spi_out)
            sa.stats["child_deleted_before_response"] += 1
            sa.remove_child(self.state, "deleted by the peer")
        return False

    def _accept(self, sa: IkeSA, msg: Message) -> tuple[ChildSaEstablished, bytes]:
        assert self.config is not None and self.state is not None
        sa_p, nonce, ke, tsi, tsr = _child_payloads(msg, "response")
        if len(sa_p.proposals) != 1 or len(sa_p.proposals[0].spi) != 4:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder's SA payload is not one ESP or AH proposal")
        prop = sa_p.proposals[0]
        self.state.spi_out = int.from_bytes(prop.spi, "big")
        offer = [Proposal(p.num, self.config.protocol, b"", list(p.transforms)) for p in self.config.proposals]
        if not proposal_acceptable(offer, prop):
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder chose a CHILD SA proposal we did not offer")
        try:
            self.state.suite = child_suite(prop)
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        if self.state.spi_out < MIN_NEGOTIATED_SPI:
            raise IkeError(Notify.INVALID_SYNTAX, "responder's ESP SPI is reserved")
        g_ir = b""
        group = dh_group(prop)
        if group:
            if self.ke is None or not isinstance(ke, KEPayload) or ke.group != group or self.ke.group != group:
                raise IkeError(Notify.INVALID_KE_PAYLOAD, "responder's KE does not match the chosen group")
            try:
                g_ir = self.ke.shared(ke.data)
            except CryptoError as exc:
                raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        accept_selectors(self.state, msg, tsi, tsr, *self.selectors(), self.config.mode)
        event = install_child(sa, self.state, exchange_initiator=True, nonce_i=self.nonce, nonce_r=nonce.data,
                              g_ir=g_ir, rekey_of=self.rekey_of())
        return event, nonce.data

    def established(self, sa: IkeSA, event: ChildSaEstablished, nonce_r: bytes, now: float) -> None:
        sa.emit(event)

    def failed(self, sa: IkeSA, notify: int, reason: str, now: float, *, detail: tuple[str, ...] = (),
               received: bool = False) -> None:
        assert self.config is not None
        sa.stats["child_create_failed"] += 1
        sa.emit(ChildSaFailed(self.config.name, notify, reason, detail, received))


class ChildCreateResponder(Responder):
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self) -> None:
        self.name = ""

    def candidates(self, sa: IkeSA) -> list[ChildConfig]:
        return list(sa.config.children)

    def rekey_of(self) -> int | None:
        return None

    def created(self, sa: IkeSA, state: ChildState, nonce_i: bytes, nonce_r: bytes) -> None:
        """Hook for the rekey responder (collision bookkeeping)."""

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        try:
            return self._negotiate(sa, msg)
        except IkeError as exc:
            # a refused CHILD SA leaves the IKE SA as it is: answer with the error, no state kept
            sa.stats["child_refused"] += 1
            sa.emit(ChildSaFailed(self.name, exc.notify, str(exc), exc.detail))
            return [NotifyPayload(exc.notify, exc.data)]

    def _negotiate(self, sa: IkeSA, msg: Message) -> list[Payload]:
        sa_p, nonce, ke, tsi, tsr = _child_payloads(msg, "request")
        transport = bool(msg.notifies(Notify.USE_TRANSPORT_MODE))
        notify, reason, data = Notify.TS_UNACCEPTABLE, "no child matches the traffic selectors", b""
        detail: list[str] | None = None     # None: no child's selectors fit (explained only then: it costs)
        for child in self.candidates(sa):
            # TSi is the initiator's side, our remote; TSr ours
            n_i, n_r = narrow(tsi.selectors, remote_policy(sa, child)), narrow(tsr.selectors, child.local_ts)
            if not n_i or not n_r:
                continue
            self.name = child.name
            ours = [Proposal(p.num, p.protocol, b"", list(p.transforms)) for p in child.proposals]
            chosen = None
            if isinstance(ke, KEPayload):
                # prefer a proposal that works with the KE the initiator already sent
                chosen = select_proposal(ours, with_group(sa_p.proposals, ke.group))
            if chosen is None:
                chosen = select_proposal(ours, sa_p.proposals)
                if chosen is not None and dh_group(chosen):
                    group = dh_group(chosen)
                    notify, reason, data = (Notify.INVALID_KE_PAYLOAD, f"CHILD SA needs a KE of group {group}",
                                            struct.pack("!H", group))
                    detail = []
                    break
            try:
                suite = child_choice(child, chosen, transport, sa)
            except IkeError as exc:
                notify, reason = exc.notify, str(exc)
                detail = proposal_mismatch(ours, sa_p.proposals, "AH" if child.is_ah else "ESP") \
                    if chosen is None else []
                continue
            g_ir, my_ke = b"", None
            group = dh_group(chosen)
            if group:
                assert isinstance(ke, KEPayload)
                my_ke = KeyExchange(group, responder=True)
                try:
                    g_ir = my_ke.shared(ke.data)
                except CryptoError as exc:
                    raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
            nonce_r = os.urandom(NONCE_LEN)
            state = ChildState(child, random_esp_spi(), int.from_bytes(chosen.spi, "big"), suite, n_r, n_i)
            event = install_child(sa, state, exchange_initiator=False, nonce_i=nonce.data, nonce_r=nonce_r,
                                  g_ir=g_ir, rekey_of=self.rekey_of())
            self.created(sa, state, nonce.data, nonce_r)
            chosen.spi = state.spi_in.to_bytes(4, "big")
            payloads: list[Payload] = [NotifyPayload(Notify.USE_TRANSPORT_MODE)] if transport else []
            payloads += [SAPayload([chosen]), NoncePayload(nonce_r)]
            if my_ke is not None:
                payloads.append(KEPayload(group, my_ke.public))
            payloads += [TSPayload(n_i, True), TSPayload(n_r, False)]
            sa.emit(event)
            return payloads
        if detail is None:
            detail = ts_mismatch(self.candidates(sa), tsi.selectors, tsr.selectors)
        raise IkeError(notify, reason, data, detail=detail)


__all__ = ["ChildCreateInitiator", "ChildCreateResponder", "dh_group"]
