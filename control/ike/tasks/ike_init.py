"""IKE_SA_INIT (RFC 7296 §1.2): proposals, key exchange, nonces, NAT detection (§2.23), COOKIE and
INVALID_KE_PAYLOAD retries (§2.6, §1.2)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import struct
from typing import TYPE_CHECKING

from control.ike.auth_sig import SignatureError, hash_algorithms_notify_data, parse_hash_algorithms
from control.ike.certs import CERT_X509_SIGNATURE, certreq_data
from control.ike.constants import ExchangeType, Notify, TransformType
from control.ike.crypto import CryptoError, KeyExchange, derive_ike_keys
from control.ike.events import IkeError
from control.ike.explain import ike_offer, proposal_mismatch
from control.ike.intermediate import IntAuth
from control.ike.message import Message
from control.ike.payloads import CertPayload, KEPayload, NoncePayload, NotifyPayload, Payload
from control.ike.proposals import (
    ProposalError,
    first_dh,
    ike_suite,
    offered_groups,
    proposal_acceptable,
    select_proposal,
    wants_intermediate,
    with_group,
    without_addke,
)
from control.ike.sa_payload import Proposal, SAPayload
from control.ike.tasks.base import Initiator, Responder
from control.ike.tasks.ike_intermediate import IkeIntermediateInitiator

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

NONCE_LEN = 32
MAX_RETRIES = 3         # COOKIE / INVALID_KE answers we follow before giving up


@functools.lru_cache(maxsize=1024)
def _packed(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    # parsing the address text was a visible share of a busy responder's IKE_SA_INIT
    return ipaddress.ip_address(ip).packed


def natd_hash(spi_i: bytes, spi_r: bytes, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
              port: int) -> bytes:
    return hashlib.sha1(spi_i + spi_r + _packed(ip) + struct.pack("!H", port)).digest()


# our address as the IkeSA holds it (str() of an ip_address object showed in a busy responder's profile)
_Addr = tuple[str | ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _natd_payloads(sa: IkeSA, spi_r: bytes, local: _Addr, remote: _Addr) -> list[Payload]:
    if sa.config.encap:
        # like strongSwan's encap=yes: a source hash nobody can match makes both sides see a NAT
        src = os.urandom(20)
    else:
        src = natd_hash(sa.spi_i, spi_r, local[0], local[1])
    dst = natd_hash(sa.spi_i, spi_r, remote[0], remote[1])
    return [NotifyPayload(Notify.NAT_DETECTION_SOURCE_IP, src), NotifyPayload(Notify.NAT_DETECTION_DESTINATION_IP, dst)]


def _detect_nat(sa: IkeSA, msg: Message, spi_r: bytes, local: _Addr, remote: _Addr) -> None:
    """Compare the peer's NAT-D hashes with what our addresses give (no NAT-D at all: no NAT-T)."""
    srcs = msg.notifies(Notify.NAT_DETECTION_SOURCE_IP)
    dsts = msg.notifies(Notify.NAT_DETECTION_DESTINATION_IP)
    if not srcs or not dsts:
        return
    expect_src = natd_hash(sa.spi_i, spi_r, remote[0], remote[1])
    expect_dst = natd_hash(sa.spi_i, spi_r, local[0], local[1])
    sa.nat_remote = not any(n.data == expect_src for n in srcs)
    sa.nat_local = sa.config.encap or not any(n.data == expect_dst for n in dsts)


def _sig_hash_notify(sa: IkeSA) -> list[Payload]:
    """RFC 7427 §4: announce the hashes we sign and verify with, when certificates are in use."""
    if not sa.config.uses_certs:
        return []
    return [NotifyPayload(Notify.SIGNATURE_HASH_ALGORITHMS, hash_algorithms_notify_data())]


def _note_sig_hashes(sa: IkeSA, msg: Message) -> None:
    # None: the peer announced nothing, so we sign with our defaults
    found = msg.notifies(Notify.SIGNATURE_HASH_ALGORITHMS)
    try:
        sa.peer_sig_hashes = parse_hash_algorithms(found[0].data) if found else None
    except SignatureError:
        sa.peer_sig_hashes = None


def _fragmentation(sa: IkeSA, msg: Message | None) -> list[Payload]:
    """RFC 7383 §2.3: IKEV2_FRAGMENTATION_SUPPORTED, unless configured ``no``.  A responder announces it
    only in answer to the initiator's (``msg`` is the request then)."""
    if sa.config.fragmentation == "no":
        return []
    if msg is not None and not msg.notifies(Notify.IKEV2_FRAGMENTATION_SUPPORTED):
        return []
    return [NotifyPayload(Notify.IKEV2_FRAGMENTATION_SUPPORTED)]


def _note_fragmentation(sa: IkeSA, msg: Message) -> None:
    # both sides announced it: oversized protected messages may go out as fragments from now on
    sa.peer_fragmentation = sa.config.fragmentation != "no" and bool(
        msg.notifies(Notify.IKEV2_FRAGMENTATION_SUPPORTED))


def _intermediate(sa: IkeSA, msg: Message | None) -> list[Payload]:
    """RFC 9242 §3.1: INTERMEDIATE_EXCHANGE_SUPPORTED from an initiator that proposes additional key
    exchanges, and from a responder in answer to it."""
    if msg is None:
        return [NotifyPayload(Notify.INTERMEDIATE_EXCHANGE_SUPPORTED)] if wants_intermediate(sa.config.proposals) \
            else []
    return [NotifyPayload(Notify.INTERMEDIATE_EXCHANGE_SUPPORTED)] \
        if msg.notifies(Notify.INTERMEDIATE_EXCHANGE_SUPPORTED) else []


def _start_addke(sa: IkeSA) -> None:
    """The chosen proposal's additional key exchanges are to run before IKE_AUTH (RFC 9370 §2.2.2)."""
    assert sa.suite is not None
    sa.addke_todo = list(sa.suite.addke)
    sa.addke_done = 0
    sa.int_auth = IntAuth() if sa.addke_todo else None


def _certreq(sa: IkeSA) -> list[Payload]:
    """RFC 7296 §1.2: the responder may ask for certificates in IKE_SA_INIT already."""
    if sa.config.remote_auth != "pubkey" or not sa.config.cacerts:
        return []
    return [CertPayload(CERT_X509_SIGNATURE, certreq_data(sa.config.cacerts), request=True)]


def select_for_ke(ours: list[Proposal], offered: list[Proposal], ke_group: int, what: str) -> Proposal:
    """A responder's choice among the offered IKE proposals (IKE_SA_INIT, and the IKE rekey in
    CREATE_CHILD_SA): one that works with the KE the initiator already sent if we can, else IkeError with
    INVALID_KE_PAYLOAD naming the group of the one we would take (RFC 7296 §1.2), or NO_PROPOSAL_CHOSEN
    ("no acceptable " + what)."""
    chosen = select_proposal(ours, with_group(offered, ke_group))
    if chosen is None:
        other = select_proposal(ours, offered)
        if other is None:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, f"no acceptable {what}",
                           detail=proposal_mismatch(ours, offered, "IKE"))
        group = other.of_type(TransformType.DH)[0].id
        raise IkeError(Notify.INVALID_KE_PAYLOAD, f"initiator's KE group {ke_group} is not the chosen {group}",
                       struct.pack("!H", group))
    return chosen


def _error_notify(msg: Message) -> NotifyPayload | None:
    return next((n for n in msg.notifies() if n.notify_type < 16384), None)


class IkeInitInitiator(Initiator):
    exchange = ExchangeType.IKE_SA_INIT

    def __init__(self) -> None:
        self.group: int | None = None
        self.cookie: bytes | None = None
        self.retries = 0

    def build_request(self, sa: IkeSA) -> list[Payload]:
        if self.group is None:
            self.group = first_dh(sa.config.proposals)
        sa.ke = KeyExchange(self.group)
        if not sa.nonce_i:
            sa.nonce_i = os.urandom(NONCE_LEN)
        props = [Proposal(p.num, p.protocol, b"", list(p.transforms)) for p in sa.config.proposals]
        payloads: list[Payload] = []
        if self.cookie is not None:
            payloads.append(NotifyPayload(Notify.COOKIE, self.cookie))   # RFC 7296 §2.6: first payload
        payloads += [SAPayload(props), KEPayload(self.group, sa.ke.public), NoncePayload(sa.nonce_i)]
        payloads += _natd_payloads(sa, bytes(8), (sa.local_ip, sa.config.local_port), sa.remote)
        return payloads + _sig_hash_notify(sa) + _fragmentation(sa, None) + _intermediate(sa, None)

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        cookie = msg.notifies(Notify.COOKIE)
        if cookie and self.retries < MAX_RETRIES:
            self.retries += 1
            self.cookie = cookie[0].data
            sa.retry_request(self, self.build_request(sa), now)
            return True
        bad_ke = msg.notifies(Notify.INVALID_KE_PAYLOAD)
        if bad_ke:
            if len(bad_ke[0].data) != 2:
                raise IkeError(Notify.INVALID_SYNTAX, "INVALID_KE_PAYLOAD without a 2-byte group")
            group = struct.unpack("!H", bad_ke[0].data)[0]
            if group == self.group or group not in offered_groups(sa.config.proposals) \
                    or self.retries >= MAX_RETRIES:
                raise IkeError(Notify.INVALID_KE_PAYLOAD, f"peer asks for key exchange group {group}, not offered")
            self.retries += 1
            self.group = group
            sa.retry_request(self, self.build_request(sa), now)
            return True
        err = _error_notify(msg)
        if err is not None:
            raise IkeError(err.notify_type, "IKE_SA_INIT refused by the peer",
                           detail=ike_offer(sa.config, self.group), received=True)
        sa_p, ke, nonce = msg.get(SAPayload), msg.get(KEPayload), msg.get(NoncePayload)
        if sa_p is None or ke is None or nonce is None or msg.spi_r == bytes(8):
            raise IkeError(Notify.INVALID_SYNTAX, "IKE_SA_INIT response lacks SA, KE, Nonce or responder SPI")
        assert isinstance(sa_p, SAPayload) and isinstance(ke, KEPayload) and isinstance(nonce, NoncePayload)
        if len(sa_p.proposals) != 1 or not proposal_acceptable(sa.config.proposals, sa_p.proposals[0]):
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder chose a proposal we did not offer",
                           detail=proposal_mismatch(sa.config.proposals, sa_p.proposals, "IKE"))
        try:
            suite = ike_suite(sa_p.proposals[0])
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        if ke.group != suite.dh or ke.group != self.group:
            raise IkeError(Notify.INVALID_KE_PAYLOAD, "responder's KE group differs from the chosen one")
        assert sa.ke is not None
        try:
            g_ir = sa.ke.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        sa.spi_r = msg.spi_r
        sa.nonce_r = nonce.data
        sa.suite = suite
        _detect_nat(sa, msg, sa.spi_r, (sa.local_ip, sa.config.local_port), sa.remote)
        if suite.addke and not msg.notifies(Notify.INTERMEDIATE_EXCHANGE_SUPPORTED):
            raise IkeError(Notify.INVALID_SYNTAX, "responder chose additional key exchanges but does not "
                           "announce IKE_INTERMEDIATE (RFC 9242)")
        sa.set_keys(derive_ike_keys(suite, sa.nonce_i, sa.nonce_r, g_ir, sa.spi_i, sa.spi_r))
        _note_sig_hashes(sa, msg)
        _note_fragmentation(sa, msg)
        _start_addke(sa)
        if sa.addke_todo:
            sa.queue_front(IkeIntermediateInitiator())
        return False


class IkeInitResponder(Responder):
    exchange = ExchangeType.IKE_SA_INIT

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        sa_p, ke, nonce = msg.get(SAPayload), msg.get(KEPayload), msg.get(NoncePayload)
        if sa_p is None or ke is None or nonce is None:
            raise IkeError(Notify.INVALID_SYNTAX, "IKE_SA_INIT request lacks SA, KE or Nonce")
        assert isinstance(sa_p, SAPayload) and isinstance(ke, KEPayload) and isinstance(nonce, NoncePayload)
        ours = sa.config.proposals
        offered = sa_p.proposals
        if not msg.notifies(Notify.INTERMEDIATE_EXCHANGE_SUPPORTED):
            offered = without_addke(offered)    # no IKE_INTERMEDIATE: its additional exchanges cannot run
        chosen = select_for_ke(ours, offered, ke.group, "IKE proposal")
        try:
            suite = ike_suite(chosen)
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        sa.ke = KeyExchange(suite.dh, responder=True)
        try:
            g_ir = sa.ke.shared(ke.data)
        except CryptoError as exc:
            raise IkeError(Notify.INVALID_SYNTAX, str(exc)) from None
        sa.nonce_i = nonce.data
        sa.nonce_r = os.urandom(NONCE_LEN)
        sa.suite = suite
        local = (sa.local_ip, sa.local_port)
        _detect_nat(sa, msg, bytes(8), local, sa.remote)
        sa.set_keys(derive_ike_keys(suite, sa.nonce_i, sa.nonce_r, g_ir, sa.spi_i, sa.spi_r))
        chosen.spi = b""
        payloads: list[Payload] = [SAPayload([chosen]), KEPayload(suite.dh, sa.ke.public), NoncePayload(sa.nonce_r)]
        payloads += _natd_payloads(sa, sa.spi_r, local, sa.remote)
        _note_sig_hashes(sa, msg)
        _note_fragmentation(sa, msg)
        _start_addke(sa)
        return payloads + _certreq(sa) + _sig_hash_notify(sa) + _fragmentation(sa, msg) + _intermediate(sa, msg)
