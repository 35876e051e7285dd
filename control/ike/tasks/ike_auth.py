"""IKE_AUTH (RFC 7296 §1.2, §2.15) with pre-shared keys, creating the first CHILD SA (§1.3, §2.17)."""

from __future__ import annotations

import functools
import hmac
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cdefs.sa import Mode
from control.ike import auth_sig
from control.ike.certs import (
    CERT_X509_SIGNATURE,
    CertError,
    certreq_data,
    check_key,
    dn_equal,
    dn_to_string,
    id_matches_cert,
    verify_chain,
)
from control.ike.child_keying import accept_selectors, ah_blocked, ah_nat_reason, child_choice, install_child
from control.ike.config import ChildConfig, Identity
from control.ike.constants import (
    MIN_NEGOTIATED_SPI,
    AuthMethod,
    ExchangeType,
    IdType,
    Notify,
    TransformType,
)
from control.ike.crypto import KeyedPrf, prf
from control.ike.events import ChildSaEstablished, ChildSaFailed, ChildState, IkeError, IkeSaEstablished, State
from control.ike.explain import auth_mismatch, auth_offer, child_offer, proposal_mismatch, ts_mismatch
from control.ike.message import Message
from control.ike.payloads import AuthPayload, CertPayload, IDPayload, NotifyPayload, Payload
from control.ike.proposals import ProposalError, child_suite, proposal_acceptable, select_proposal
from control.ike.sa_payload import Proposal, SAPayload
from control.ike.spi import random_esp_spi
from control.ike.tasks.base import Initiator, Responder
from control.ike.tasks.child_delete import ChildDeleteInitiator
from control.ike.ts import narrow
from control.ike.ts_payload import TrafficSelectorEntry, TSPayload
from control.ike.vip import lease_for_request, remote_policy, request_payloads, take_reply
from control.ike.window import note_peer_window, window_payloads

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

KEY_PAD = b"Key Pad for IKEv2"
_DH = int(TransformType.DH)        # read per transform: enum class attributes are slow
# errors about the CHILD SA only: the IKE SA still comes up (RFC 7296 §1.2)
CHILD_ERRORS = (Notify.NO_PROPOSAL_CHOSEN, Notify.TS_UNACCEPTABLE, Notify.SINGLE_PAIR_REQUIRED,
                Notify.INTERNAL_ADDRESS_FAILURE, Notify.FAILED_CP_REQUIRED, Notify.INVALID_SELECTORS,
                Notify.NO_ADDITIONAL_SAS)


def signed_octets(sa: IkeSA, of_initiator: bool, id_payload: IDPayload) -> bytes:
    """What the initiator's or the responder's AUTH covers (RFC 7296 §2.15), for PSK and signatures."""
    assert sa.suite is not None and sa.keys is not None
    p = sa.suite.prf
    # RFC 9242 §3.3.2: after IKE_INTERMEDIATE exchanges both AUTHs also cover IntAuth_i | IntAuth_r | MID
    int_auth = sa.int_auth.octets() if sa.int_auth is not None else b""
    if of_initiator:
        return sa.init_request + sa.nonce_r + prf(p, sa.keys.sk_pi, id_payload.body()) + int_auth
    return sa.init_response + sa.nonce_i + prf(p, sa.keys.sk_pr, id_payload.body()) + int_auth


@functools.lru_cache(maxsize=256)
def _psk_prf(prf_alg: int, psk: bytes) -> KeyedPrf:
    # prf(PSK, "Key Pad for IKEv2") depends on the configuration only: it and the HMAC keyed with it
    # are set up once per PSK and PRF instead of twice per IKE_AUTH (both AUTH payloads).  Held like
    # the PSK itself, never logged (KeyedPrf's repr hides it).
    return KeyedPrf(prf_alg, prf(prf_alg, psk, KEY_PAD))


def psk_auth(sa: IkeSA, of_initiator: bool, id_payload: IDPayload) -> bytes:
    """AUTH data for the initiator's or the responder's identity (RFC 7296 §2.15)."""
    assert sa.suite is not None
    return _psk_prf(sa.suite.prf, sa.config.psk)(signed_octets(sa, of_initiator, id_payload))


def _local_id(sa: IkeSA, initiator: bool) -> IDPayload:
    ident, creds = sa.config.local_id, sa.config.credentials
    if ident.id_type == IdType.DER_ASN1_DN and creds is not None:
        subject = creds.cert.subject.public_bytes()
        if dn_equal(ident.data, subject):
            # the certificate's own encoding, so a peer comparing bytes or string types agrees
            return IDPayload(IdType.DER_ASN1_DN, subject, initiator)
    return ident.payload(initiator)


def _our_auth(sa: IkeSA, initiator: bool, idp: IDPayload) -> list[Payload]:
    """CERT payloads (ours, then intermediates) and AUTH for our side."""
    cfg = sa.config
    if cfg.local_auth != "pubkey":
        return [AuthPayload(AuthMethod.PSK, psk_auth(sa, initiator, idp))]
    assert cfg.credentials is not None
    creds = cfg.credentials
    certs: list[Payload] = [CertPayload(CERT_X509_SIGNATURE, c.public_bytes(Encoding.DER))
                            for c in [creds.cert, *creds.chain]]
    try:
        data = auth_sig.sign(creds.key, signed_octets(sa, initiator, idp), sa.peer_sig_hashes,
                             cfg.rsa_pss)
    except auth_sig.SignatureError as exc:
        raise IkeError(Notify.AUTHENTICATION_FAILED, str(exc)) from None
    return certs + [AuthPayload(AuthMethod.DIGITAL_SIGNATURE, data)]


def certreq_payloads(sa: IkeSA) -> list[Payload]:
    """A CERTREQ naming our CAs, when we authenticate the peer by certificate."""
    if sa.config.remote_auth != "pubkey" or not sa.config.cacerts:
        return []
    return [CertPayload(CERT_X509_SIGNATURE, certreq_data(sa.config.cacerts), request=True)]


def _same_identity(a: Identity, b: Identity) -> bool:
    if a.id_type == b.id_type == IdType.DER_ASN1_DN:
        return dn_equal(a.data, b.data)
    if a.id_type == b.id_type and a.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
        return a.data.lower() == b.data.lower()
    return a == b


def _auth_failed(sa: IkeSA, reason: str, check: str, peer: Identity, auth: AuthPayload) -> IkeError:
    scheme = auth_sig.scheme_name(auth.data) if auth.method == AuthMethod.DIGITAL_SIGNATURE else ""
    return IkeError(Notify.AUTHENTICATION_FAILED, reason,
                    detail=auth_mismatch(check, peer, sa.config.remote_id, sa.config.remote_auth, auth.method,
                                         scheme))


def _verify_signature(sa: IkeSA, msg: Message, peer_is_initiator: bool, idp: IDPayload, auth: AuthPayload,
                      peer: Identity) -> None:
    if auth.method != AuthMethod.DIGITAL_SIGNATURE:
        raise _auth_failed(sa, f"peer uses auth method {auth.method}, we expect a digital signature (RFC 7427)",
                           "auth method", peer, auth)
    ders = [p.data for p in msg.payloads if isinstance(p, CertPayload) and not p.request
            and p.encoding == CERT_X509_SIGNATURE]
    if not ders:
        raise _auth_failed(sa, f"{peer} sent no X.509 certificate", "certificate chain: no certificate sent",
                           peer, auth)
    try:
        certs = [x509.load_der_x509_certificate(d) for d in ders[:4]]
        verify_chain(certs[0], certs[1:], sa.config.cacerts)
        check_key(certs[0].public_key(), "peer certificate")
    except (CertError, ValueError) as exc:
        raise _auth_failed(sa, f"certificate of {peer}: {exc}", f"certificate chain: {exc}", peer, auth) from None
    if not id_matches_cert(idp.id_type, idp.data, certs[0]):
        subject = dn_to_string(certs[0].subject.public_bytes())
        raise _auth_failed(sa, f"identity {peer} is not in its certificate '{subject}' (subject or subjectAltName)",
                           f"identity mismatch: not in the certificate of '{subject}'", peer, auth)
    try:
        auth_sig.verify(certs[0].public_key(), auth.data, signed_octets(sa, peer_is_initiator, idp))  # type: ignore[arg-type]
    except auth_sig.SignatureError as exc:
        raise _auth_failed(sa, f"signature of {peer}: {exc}", f"signature: {exc}", peer, auth) from None


def _verify_peer(sa: IkeSA, msg: Message, peer_is_initiator: bool) -> Identity:
    idp, auth = msg.get(IDPayload, initiator=peer_is_initiator), msg.get(AuthPayload)
    if idp is None or auth is None:
        raise IkeError(Notify.AUTHENTICATION_FAILED, "IKE_AUTH without ID or AUTH payload")
    assert isinstance(idp, IDPayload) and isinstance(auth, AuthPayload)
    peer = Identity(idp.id_type, idp.data)
    if sa.config.remote_id is not None and not _same_identity(peer, sa.config.remote_id):
        raise _auth_failed(sa, f"peer identity {peer} is not the configured one", "identity mismatch", peer, auth)
    if sa.config.remote_auth == "pubkey":
        _verify_signature(sa, msg, peer_is_initiator, idp, auth, peer)
        return peer
    if auth.method != AuthMethod.PSK:
        raise _auth_failed(sa, f"peer uses auth method {auth.method}, we expect PSK", "auth method", peer, auth)
    if not hmac.compare_digest(auth.data, psk_auth(sa, peer_is_initiator, idp)):
        # never more than this: the AUTH value says nothing an operator could use, and the PSK stays out
        raise _auth_failed(sa, f"PSK authentication of {peer} failed",
                           "PSK mismatch (the peer's AUTH does not match our PSK)", peer, auth)
    return peer


def _established(sa: IkeSA, peer: Identity) -> None:
    assert sa.suite is not None
    sa.state = State.ESTABLISHED
    sa.remote_identity = peer
    sa.emit(IkeSaEstablished(sa.spi_i, sa.spi_r, sa.initiator, sa.suite, sa.config.local_id, peer, sa.remote,
                             sa.nat_local, sa.nat_remote, tuple(sa.vips)))


def _esp_offer(child: ChildConfig, spi: int) -> list[Proposal]:
    # the first CHILD SA has no KE payload, so no key exchange transforms are offered; AH or ESP as configured
    return [Proposal(p.num, child.protocol, spi.to_bytes(4, "big"),
                     [t for t in p.transforms if t.type != _DH]) for p in child.proposals]


class IkeAuthInitiator(Initiator):
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, child: ChildConfig | None):
        self.child = child
        self.state: ChildState | None = None
        self.replaces: int | None = None    # reauthentication: the old pair's inbound SPI (rekey_of)

    def build_request(self, sa: IkeSA) -> list[Payload]:
        idi = _local_id(sa, True)
        ours = _our_auth(sa, True, idi)
        # RFC 7296 §1.2 order: IDi, [CERT+], [CERTREQ], [IDr], AUTH
        payloads: list[Payload] = [idi, *ours[:-1], *certreq_payloads(sa)]
        if sa.config.remote_id is not None:
            payloads.append(sa.config.remote_id.payload(False))
        payloads.append(ours[-1])
        payloads += request_payloads(sa)
        payloads += window_payloads(sa)
        if self.child is not None and ah_blocked(sa, self.child):
            # NAT detection in IKE_SA_INIT found a NAT (or encap is forced): AH could not reach the peer
            # intact, so it is not offered; the IKE SA comes up without it and the reason is reported
            sa.stats["child_ah_refused_nat"] += 1
            sa.emit(ChildSaFailed(self.child.name, Notify.NO_PROPOSAL_CHOSEN, ah_nat_reason(sa, self.child.name)))
            self.child = None
        if self.child is not None:
            self.state = ChildState(self.child, random_esp_spi())
            if self.child.mode == Mode.TRANSPORT:
                payloads.append(NotifyPayload(Notify.USE_TRANSPORT_MODE))
            payloads += [SAPayload(_esp_offer(self.child, self.state.spi_in)),
                         TSPayload(list(self.child.local_ts), True), TSPayload(list(self.child.remote_ts), False)]
        return payloads

    def process_response(self, sa: IkeSA, msg: Message, now: float) -> bool:
        errors = [n for n in msg.notifies() if n.notify_type < 16384]
        fatal = [n for n in errors if n.notify_type not in CHILD_ERRORS]
        if fatal:
            offered = auth_offer(sa.config)
            if self.child is not None:
                offered += child_offer(self.child, strip_dh=True)
            raise IkeError(fatal[0].notify_type, "IKE_AUTH refused by the peer", detail=offered, received=True)
        peer = _verify_peer(sa, msg, peer_is_initiator=False)
        take_reply(sa, msg)
        note_peer_window(sa, msg)
        _established(sa, peer)
        if self.child is None or self.state is None:
            return False
        try:
            if errors:
                raise IkeError(errors[0].notify_type, "peer refused the CHILD SA",
                               detail=child_offer(self.child, strip_dh=True), received=True)
            sa.emit(self._child(sa, msg))
        except IkeError as exc:
            sa.stats["child_create_failed"] += 1
            sa.emit(ChildSaFailed(self.child.name, exc.notify, str(exc), exc.detail, exc.received))
            if self.state.spi_out and not errors:
                # the responder installed a CHILD SA we cannot accept: it must not linger there, so it
                # is deleted with an INFORMATIONAL exchange while the IKE SA stays (RFC 7296 §1.3)
                sa.stats["child_refused_after_the_fact"] += 1
                sa.queue_front(ChildDeleteInitiator([], reason=f"refused: {exc}", orphans=[self.state]))
        return False

    def _child(self, sa: IkeSA, msg: Message) -> ChildSaEstablished:
        assert self.child is not None and self.state is not None
        sa_p, tsi, tsr = msg.get(SAPayload), msg.get(TSPayload, initiator=True), msg.get(TSPayload, initiator=False)
        if sa_p is None or tsi is None or tsr is None:
            raise IkeError(Notify.INVALID_SYNTAX, "IKE_AUTH response lacks SA, TSi or TSr")
        assert isinstance(sa_p, SAPayload) and isinstance(tsi, TSPayload) and isinstance(tsr, TSPayload)
        offer = _esp_offer(self.child, self.state.spi_in)
        if len(sa_p.proposals) != 1 or not proposal_acceptable(offer, sa_p.proposals[0]) \
                or len(sa_p.proposals[0].spi) != 4:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder chose a CHILD SA proposal we did not offer")
        try:
            self.state.suite = child_suite(sa_p.proposals[0])
        except ProposalError as exc:
            raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
        self.state.spi_out = int.from_bytes(sa_p.proposals[0].spi, "big")
        if self.state.spi_out < MIN_NEGOTIATED_SPI:
            raise IkeError(Notify.INVALID_SYNTAX, "responder's ESP SPI is reserved")
        accept_selectors(self.state, msg, tsi, tsr, self.child.local_ts, self.child.remote_ts, self.child.mode)
        return install_child(sa, self.state, rekey_of=self.replaces)


class IkeAuthResponder(Responder):
    exchange = ExchangeType.IKE_AUTH

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        peer = _verify_peer(sa, msg, peer_is_initiator=True)
        sa.remote_identity = peer           # the leases are the identity's
        cfg_reply, no_address = lease_for_request(sa, msg)
        idr = _local_id(sa, False)
        # RFC 7296 §1.2 order: IDr, [CERT+], AUTH, [CP(CFG_REPLY)], then the CHILD SA's payloads
        payloads: list[Payload] = [idr, *_our_auth(sa, False, idr), *cfg_reply, *window_payloads(sa)]
        note_peer_window(sa, msg)
        _established(sa, peer)
        sa_p, tsi, tsr = msg.get(SAPayload), msg.get(TSPayload, initiator=True), msg.get(TSPayload, initiator=False)
        if sa_p is None:
            return payloads             # IKE SA only (RFC 6023 childless is negotiated elsewhere)
        if tsi is None or tsr is None:
            sa.emit(ChildSaFailed("", Notify.INVALID_SYNTAX, "CHILD SA request without TSi/TSr"))
            return payloads + [NotifyPayload(Notify.INVALID_SYNTAX)]
        assert isinstance(sa_p, SAPayload) and isinstance(tsi, TSPayload) and isinstance(tsr, TSPayload)
        if no_address:
            # §3.15.4: no address to give, so no CHILD SA either; the IKE SA holds no lease
            sa.emit(ChildSaFailed("", Notify.INTERNAL_ADDRESS_FAILURE,
                                  f"no free address in pool(s) {', '.join(sa.config.pools)} for {peer}"))
            return payloads + [NotifyPayload(Notify.INTERNAL_ADDRESS_FAILURE)]
        transport = bool(msg.notifies(Notify.USE_TRANSPORT_MODE))
        notify, reason, name = Notify.TS_UNACCEPTABLE, "no child matches the traffic selectors", ""
        detail: list[str] | None = None     # None: no child's selectors fit (explained only then: it costs)
        for child in sa.config.children:
            # TSi is the initiator's side, our remote; TSr ours
            n_i, n_r = narrow(tsi.selectors, remote_policy(sa, child)), narrow(tsr.selectors, child.local_ts)
            if not n_i or not n_r:
                continue
            name = child.name
            # strip_dh: no KE payload in IKE_AUTH, so key exchange transforms count on neither side
            chosen = select_proposal(child.proposals, sa_p.proposals, strip_dh=True)
            try:
                suite = child_choice(child, chosen, transport, sa)
            except IkeError as exc:
                notify, reason = exc.notify, str(exc)
                detail = proposal_mismatch(child.proposals, sa_p.proposals, "AH" if child.is_ah else "ESP",
                                           strip_dh=True) if chosen is None else []
                continue
            state = ChildState(child, random_esp_spi(), int.from_bytes(chosen.spi, "big"), suite, n_r, n_i)
            event = install_child(sa, state)
            chosen.spi = state.spi_in.to_bytes(4, "big")
            if transport:
                payloads.append(NotifyPayload(Notify.USE_TRANSPORT_MODE))
            payloads += [SAPayload([chosen]), TSPayload(n_i, True), TSPayload(n_r, False)]
            sa.emit(event)
            return payloads
        if detail is None:
            detail = ts_mismatch(sa.config.children, tsi.selectors, tsr.selectors)
        sa.emit(ChildSaFailed(name, notify, reason, tuple(detail)))
        return payloads + [NotifyPayload(notify)]


__all__ = ["IkeAuthInitiator", "IkeAuthResponder", "psk_auth", "signed_octets", "certreq_payloads",
           "install_child", "child_choice", "accept_selectors",
           "TrafficSelectorEntry"]
