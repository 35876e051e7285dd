"""Rekeying the IKE SA (RFC 7296 §1.3.2, §2.18): CREATE_CHILD_SA with an IKE proposal carrying the
new SPI, a KE and nonces.  SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr); the new IKE SA is a new
``IkeSA`` whose initiator is the rekey's initiator; the CHILD SAs move to it and the rekey's initiator
deletes the old IKE SA.

Simultaneous IKE rekeys (§2.8.1): the new IKE SA made by the exchange with the lowest of the four
nonces is redundant and deleted by whoever created it; the CHILD SAs go to the other one.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from control.ike.collision import lowest_nonce_wins
from control.ike.constants import ExchangeType, Notify, ProtocolId, notify_name
from control.ike.crypto import CryptoError, KeyExchange, derive_rekeyed_ike_keys
from control.ike.events import IkeError, IkeSaRekeyed, State
from control.ike.message import Message
from control.ike.payloads import KEPayload, NoncePayload, NotifyPayload, Payload
from control.ike.proposals import ProposalError, ike_suite, offered_groups, proposal_acceptable, without_addke
from control.ike.sa_payload import Proposal, SAPayload
from control.ike.spi import random_spi
from control.ike.tasks.base import Initiator, Responder
from control.ike.tasks.ike_delete import IkeDeleteInitiator
from control.ike.tasks.ike_init import select_for_ke

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

NONCE_LEN = 32
MAX_KE_RETRIES = 2


def move_to(old: IkeSA, new: IkeSA) -> None:
    """CHILD SAs and queued work go to the new IKE SA (another IKE rekey is pointless there)."""
    new.children, old.children = old.children, []
    new.vips, new.dns = old.vips, old.dns       # a rekey keeps the addresses (the daemon moves the leases)
    new.adopt_tasks([t for t in old.take_tasks() if not isinstance(t, IkeRekeyInitiator)])


def _replaced(old: IkeSA, new: IkeSA, now: float) -> None:
    move_to(old, new)
    old.state = State.REKEYED
    old.replaced_by = new
    old.emit(IkeSaRekeyed(old.spi_i, old.spi_r, new))
    # work that waited for the rekey (e.g. a CREATE_CHILD_SA queued behind it) starts on the new SA now;
    # the caller sends what the new SA queued when it handles IkeSaRekeyed
    new.start_queued(now)


def _redundant(old: IkeSA, new: IkeSA) -> None:
    new.redundant = True
    old.emit(IkeSaRekeyed(old.spi_i, old.spi_r, new, redundant=True))


class IkeRekeyInitiator(Initiator):
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self) -> None:
        self.group: int | None = None
        self.retries = 0
        self.spi = b""
        self.nonce = b""
        self.ke: KeyExchange | None = None

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        if sa.state != State.ESTABLISHED:
            return None
        assert sa.suite is not None
        groups = offered_groups(sa.config.proposals)
        group = self.group or (sa.suite.dh if sa.suite.dh in groups else groups[0])
        self.spi = random_spi()
        self.nonce = os.urandom(NONCE_LEN)
        self.ke = KeyExchange(group)
        sa.ike_collision = None
        props = [Proposal(p.num, ProtocolId.IKE, self.spi, list(p.transforms))
                 for p in without_addke(sa.config.proposals)]
        return [SAPayload(props), NoncePayload(self.nonce), KEPayload(group, self.ke.public)]

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        errors = [n for n in msg.notifies() if n.notify_type < 16384]
        if errors:
            n = errors[0]
            if n.notify_type == Notify.INVALID_KE_PAYLOAD and len(n.data) == 2 and self.retries < MAX_KE_RETRIES:
                group = struct.unpack("!H", n.data)[0]
                if group in offered_groups(sa.config.proposals) and self.ke and group != self.ke.group:
                    self.retries += 1
                    self.group = group
                    sa.queue_front(self)
                    return False
            self.failed(sa, f"peer refused the IKE rekey: {notify_name(n.notify_type)}", now,
                        n.notify_type == Notify.TEMPORARY_FAILURE)
            return False
        try:
            new, nonce_r = self._accept(sa, msg, now)
        except IkeError as exc:
            # a broken answer to a rekey: keep the old IKE SA, which still works
            self.failed(sa, str(exc), now, False)
            return False
        col = sa.ike_collision
        sa.ike_collision = None
        if col is not None and lowest_nonce_wins((self.nonce, nonce_r), (col[0], col[1])):
            # ours is redundant: the peer's new IKE SA survives and the peer deletes the old one
            sa.stats["ike_rekey_collision_lost"] += 1
            _replaced(sa, col[2], now)
            _redundant(sa, new)
            new.delete(now)
            return False
        if col is not None:
            sa.stats["ike_rekey_collision_won"] += 1
        _replaced(sa, new, now)
        if col is not None:
            _redundant(sa, col[2])      # the peer deletes it
        sa.queue_front(IkeDeleteInitiator(rekeyed=True))
        return False

    def _accept(self, sa: IkeSA, msg: Message, now: float) -> tuple[IkeSA, bytes]:
        assert sa.suite is not None and sa.keys is not None and self.ke is not None
        sa_p, nonce, ke = msg.get(SAPayload), msg.get(NoncePayload), msg.get(KEPayload)
        if not isinstance(sa_p, SAPayload) or not isinstance(nonce, NoncePayload) or not isinstance(ke, KEPayload):
            raise IkeError(Notify.INVALID_SYNTAX, "IKE rekey response lacks SA, Nonce or KE")
        if len(sa_p.proposals) != 1 or len(sa_p.proposals[0].spi) != 8 or sa_p.proposals[0].spi == bytes(8):
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "IKE rekey response is not one IKE proposal with an SPI")
        prop = sa_p.proposals[0]
        ours = [Proposal(p.num, ProtocolId.IKE, b"", list(p.transforms)) for p in without_addke(sa.config.proposals)]
        if prop.protocol != ProtocolId.IKE or not proposal_acceptable(ours, prop):
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder chose an IKE proposal we did not offer")
        try:
            suite = ike_suite(prop)
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        if ke.group != suite.dh or ke.group != self.ke.group:
            raise IkeError(Notify.INVALID_KE_PAYLOAD, "responder's KE group differs from the chosen one")
        try:
            g_ir = self.ke.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        keys = derive_rekeyed_ike_keys(sa.suite.prf, sa.keys.sk_d, suite, self.nonce, nonce.data, g_ir,
                                       self.spi, prop.spi)
        new = type(sa).from_rekey(sa, initiator=True, spi_i=self.spi, spi_r=prop.spi, suite=suite, keys=keys,
                               nonce_i=self.nonce, nonce_r=nonce.data, now=now)
        return new, nonce.data

    def failed(self, sa: IkeSA, reason: str, now: float, temporary: bool) -> None:
        sa.stats["ike_rekey_failed"] += 1
        col = sa.ike_collision
        sa.ike_collision = None
        if col is not None:
            # the peer's crossing rekey went through: it replaces this SA and deletes it
            _replaced(sa, col[2], now)
            return
        if temporary:
            sa.rekey_at = now + 2.0 + sa.config.retransmit_timeout      # RFC 7296 §2.25: try again soon


class IkeRekeyResponder(Responder):
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self) -> None:
        self.new: IkeSA | None = None
        self.nonces = (b"", b"")

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        try:
            return self._negotiate(sa, msg, now)
        except IkeError as exc:
            sa.stats["ike_rekey_refused"] += 1
            return [NotifyPayload(exc.notify, exc.data)]

    def _negotiate(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        assert sa.suite is not None and sa.keys is not None
        busy = sa.outstanding_task
        if busy is not None and not isinstance(busy, IkeRekeyInitiator):
            # a CHILD exchange of ours is under way on this IKE SA: its result must not land on an SA
            # being replaced, so the peer retries a little later (RFC 7296 §2.25.2)
            raise IkeError(Notify.TEMPORARY_FAILURE, "busy with another exchange")
        sa_p, nonce, ke = msg.get(SAPayload), msg.get(NoncePayload), msg.get(KEPayload)
        if not isinstance(sa_p, SAPayload) or not isinstance(nonce, NoncePayload) or not isinstance(ke, KEPayload):
            raise IkeError(Notify.INVALID_SYNTAX, "IKE rekey request lacks SA, Nonce or KE")
        ours = [Proposal(p.num, ProtocolId.IKE, b"", list(p.transforms)) for p in without_addke(sa.config.proposals)]
        chosen = select_for_ke(ours, sa_p.proposals, ke.group, "IKE proposal for the rekey")
        if len(chosen.spi) != 8 or chosen.spi == bytes(8):
            raise IkeError(Notify.INVALID_SYNTAX, "IKE rekey proposal without an 8-byte SPI")
        try:
            suite = ike_suite(chosen)
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        my_ke = KeyExchange(suite.dh, responder=True)
        try:
            g_ir = my_ke.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        nonce_r = os.urandom(NONCE_LEN)
        spi_r = random_spi()
        keys = derive_rekeyed_ike_keys(sa.suite.prf, sa.keys.sk_d, suite, nonce.data, nonce_r, g_ir, chosen.spi,
                                       spi_r)
        self.new = type(sa).from_rekey(sa, initiator=False, spi_i=chosen.spi, spi_r=spi_r, suite=suite, keys=keys,
                                    nonce_i=nonce.data, nonce_r=nonce_r, now=now)
        self.nonces = (nonce.data, nonce_r)
        chosen.spi = spi_r
        return [SAPayload([chosen]), NoncePayload(nonce_r), KEPayload(suite.dh, my_ke.public)]

    def after_response(self, sa: IkeSA, now: float) -> None:
        if self.new is None:
            return
        if isinstance(sa.outstanding_task, IkeRekeyInitiator):
            sa.ike_collision = (*self.nonces, self.new)     # settled when our own rekey completes
            return
        _replaced(sa, self.new, now)        # the peer deletes the old IKE SA next


__all__ = ["IkeRekeyInitiator", "IkeRekeyResponder", "move_to"]
