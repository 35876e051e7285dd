"""Phase 1 of IKEv1 with pre-shared keys (RFC 2409 §5, §5.4): main mode's six messages and aggressive
mode's three, NAT detection (RFC 3947) and the float to the NAT-T port.

A mixin of ``Ikev1SA`` (control.ikev1.sa): every handler checks the whole message before it changes the
SA, so a message that fails anywhere leaves no trace but a counted drop.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from cryptography.hazmat.primitives import serialization

from control.ike.config import Identity
from control.ike.crypto import KeyExchange
from control.ike.proposals import ProposalError
from control.ikev1 import auth_sig
from control.ikev1.codec import (
    CertPayload,
    DecodeError,
    Header,
    IDPayload,
    Payload,
    Proposal,
    Refused,
    SAPayload,
    decode_payloads,
    encode_plain,
)
from control.ikev1.constants import (
    HEADER_LEN,
    VID_DPD,
    VID_NATT_RFC3947,
    Exchange,
    PayloadType,
    Protocol,
)
from control.ikev1.events import Address, IsakmpSaEstablished
from control.ikev1.keys import derive_phase1, hash_i, hash_r, nat_d, phase1_iv, skeyid_psk, skeyid_sig
from control.ikev1.proposals import choose_p1, p1_suite

_NONCE_LEN = 32


class Phase1:
    """Main and aggressive mode, both roles."""

    def initiate(self, now: float) -> None:
        """Start phase 1 (a quick mode for the configured child follows once it is up)."""
        cfg = self.config
        self.state = "connecting"
        transforms = cfg.p1_transforms
        exchange = Exchange.AGGRESSIVE if cfg.aggressive else Exchange.MAIN
        if cfg.aggressive:
            # one KE goes in the first message: offer only the transforms of the first group
            group = p1_suite(transforms[0]).group
            transforms = [t for t in transforms if p1_suite(t).group == group]
        sa = SAPayload([Proposal(1, Protocol.ISAKMP, b"", transforms)])
        self.sa_i_b = sa.body()
        payloads = [sa]
        if cfg.aggressive:
            self.ke = KeyExchange(group)
            self.g_xi, self.nonce_i = self.ke.public, os.urandom(_NONCE_LEN)
            self._id_i = IDPayload(cfg.local_id.id_type, cfg.local_id.data)
            payloads += [Payload(PayloadType.KE, self.g_xi), Payload(PayloadType.NONCE, self.nonce_i), self._id_i]
        payloads += [Payload(PayloadType.VID, VID_NATT_RFC3947), Payload(PayloadType.VID, VID_DPD)]
        msg = encode_plain(self.cookie_i, self.cookie_r, exchange, 0, payloads)
        self.p1_step = "am2" if cfg.aggressive else "mm2"
        self._send(msg)
        self._arm(msg, now, "aggressive mode message 1" if cfg.aggressive else "main mode message 1")

    # -- dispatch -------------------------------------------------------------------------------------

    def _phase1(self, hdr: Header, data: bytes, remote: Address, now: float) -> list[bytes] | None:
        if self.established:
            raise Refused("phase 1 message for an established ISAKMP SA")
        if hdr.message_id != 0:
            raise DecodeError("phase 1 message with a non-zero message ID")
        aggressive = hdr.exchange == Exchange.AGGRESSIVE
        if aggressive != self.config.aggressive:
            raise Refused("aggressive mode not configured" if aggressive else "connection wants aggressive mode")
        step = self.p1_step
        if not self.initiator and step == 0:
            step = "am1" if aggressive else "mm1"
        handler = {"mm1": self._r_mm1, "mm2": self._i_mm2, "mm3": self._r_mm3, "mm4": self._i_mm4,
                   "mm5": self._r_mm5, "mm6": self._i_mm6, "am1": self._r_am1, "am2": self._i_am2,
                   "am3": self._r_am3}.get(step)
        if handler is None:
            raise Refused(f"unexpected phase 1 message (waiting for {step})")
        if step in ("mm5", "mm6") or (step == "am3" and hdr.encrypted):
            payloads, iv_after = self._open(hdr, data, self.p1_iv)
        else:
            if hdr.encrypted:
                raise Refused("encrypted phase 1 message before the keys exist")
            payloads, iv_after = decode_payloads(hdr.next_payload, data[HEADER_LEN:]), b""
        return handler(hdr, payloads, iv_after, remote, now)

    # -- pieces ------------------------------------------------------------------------------------------

    @staticmethod
    def _one(payloads: list, ptype: int, what: str) -> object:
        found = [p for p in payloads if p.type == ptype]
        if len(found) != 1:
            raise Refused(f"{what}: expected one {PayloadType(ptype).name} payload, got {len(found)}")
        return found[0]

    def _vids(self, payloads: list) -> bool:
        return any(p.type == PayloadType.VID and p.data == VID_NATT_RFC3947 for p in payloads)

    def _choose(self, sa: SAPayload) -> tuple[SAPayload, object]:
        """A responder's reply SA (the chosen transform alone) and its suite."""
        if len(sa.proposals) != 1 or sa.proposals[0].protocol != Protocol.ISAKMP:
            raise Refused("phase 1 SA must carry one ISAKMP proposal")
        prop = sa.proposals[0]
        chosen = choose_p1(self.config.p1_transforms, prop.transforms)
        if chosen is None:
            raise Refused("no acceptable phase 1 proposal")
        return SAPayload([Proposal(prop.num, Protocol.ISAKMP, prop.spi, [chosen])]), p1_suite(chosen)

    def _accept_choice(self, sa: SAPayload) -> object:
        """An initiator's check of the responder's choice: one transform, one of ours."""
        if len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
            raise Refused("responder's SA must carry exactly one transform")
        t = sa.proposals[0].transforms[0]
        try:
            suite = p1_suite(t)
        except ProposalError as exc:
            raise Refused(str(exc)) from None
        if choose_p1(self.config.p1_transforms, [t]) is None:
            raise Refused("responder chose a transform we did not offer")
        return suite

    def _nat_d(self, suite, cky_r: bytes) -> list[Payload]:
        rip = _packed(self.remote[0])
        return [Payload(PayloadType.NAT_D, nat_d(suite, self.cookie_i, cky_r, rip, self.remote[1])),
                Payload(PayloadType.NAT_D, nat_d(suite, self.cookie_i, cky_r, self.local_ip.packed, self.local[1]))]

    def _detect_nat(self, suite, cky_r: bytes, payloads: list, remote: Address) -> tuple[bool, bool]:
        """(we are behind a NAT, the peer is): the first NAT-D hashes our address as the peer sent to it,
        the others the peer's own (RFC 3947 §3.2).  No NAT-D: no NAT-T."""
        ds = [p.data for p in payloads if p.type == PayloadType.NAT_D]
        if not ds:
            return False, False
        if len(ds) < 2:
            raise Refused("a single NAT-D payload")
        ours = nat_d(suite, self.cookie_i, cky_r, self.local_ip.packed, self.local[1])
        theirs = nat_d(suite, self.cookie_i, cky_r, _packed(remote[0]), remote[1])
        return not hmac.compare_digest(ds[0], ours), not any(hmac.compare_digest(d, theirs) for d in ds[1:])

    def _keys(self, suite, ke: KeyExchange, peer_ke: bytes, ni: bytes, nr: bytes, cky_i: bytes, cky_r: bytes):
        g_xy = ke.shared(peer_ke)
        skeyid = skeyid_sig(suite, ni, nr, g_xy) if self.config.auth != "psk" else \
            skeyid_psk(suite, self.config.psk, ni, nr)
        return g_xy, derive_phase1(suite, skeyid, g_xy, cky_i, cky_r)

    # signatures (main mode): CERTREQ in messages 3/4, ID | CERT | SIG in 5/6 instead of ID | HASH

    def _certreq(self) -> list:
        if self.config.auth == "psk":
            return []
        return [CertPayload(auth_sig.CERT_X509_SIG, ca.subject.public_bytes(), PayloadType.CERTREQ)
                for ca in self.config.cacerts]

    def _proof(self, h: bytes) -> list:
        """What proves us in message 5 or 6: HASH with a PSK, our certificate and SIG with signatures."""
        if self.config.auth == "psk":
            return [Payload(PayloadType.HASH, h)]
        creds = self.config.credentials
        der = creds.cert.public_bytes(serialization.Encoding.DER)
        return [CertPayload(auth_sig.CERT_X509_SIG, der), Payload(PayloadType.SIG, auth_sig.sign(creds.key, h))]

    def _check_proof(self, payloads: list, idp: IDPayload, want: bytes, what: str) -> None:
        if self.config.auth == "psk":
            h = self._one(payloads, PayloadType.HASH, what)
            if not hmac.compare_digest(h.data, want):
                raise Refused(f"{'HASH_I' if not self.initiator else 'HASH_R'} does not verify "
                              "(wrong pre-shared key?)")
            return
        sig = self._one(payloads, PayloadType.SIG, what)
        certs = [p for p in payloads if p.type == PayloadType.CERT and p.encoding == auth_sig.CERT_X509_SIG]
        cert = auth_sig.peer_certificate(certs[0].data if certs else None, idp.id_type, idp.data,
                                         self.config.cacerts)
        if not auth_sig.verify(cert.public_key(), self.suite.auth, want, sig.data):
            raise Refused(f"{what}: signature does not verify")

    def _check_id(self, idp: IDPayload) -> Identity:
        got = Identity(idp.id_type, idp.data)
        want = self.config.remote_id
        if want is not None and got != want:
            raise Refused(f"peer identity {got} is not the configured {want}")
        return got

    def _established(self) -> None:
        self.state = "established"
        self.p1_step = "done"
        self._retx = self._half_open_until = None
        self._events.append(IsakmpSaEstablished(self.cookie_i, self.cookie_r, self.initiator, self.config.aggressive,
                                                self.suite, self.remote_identity, self.remote, self.nat_local,
                                                self.nat_remote))
        # the caller's receive_datagram starts the initiator's quick mode once this message's answer is out
        if self.initiator:
            self._after.append(lambda now: self.start_quick(now))

    # -- main mode, initiator ----------------------------------------------------------------------------

    def _i_mm2(self, hdr, payloads, _iv, remote, now):
        sa = self._one(payloads, PayloadType.SA, "main mode message 2")
        suite = self._accept_choice(sa)
        if hdr.cookie_r == bytes(8):
            raise Refused("responder cookie is zero")
        self.cookie_r, self.suite, self.peer_natt = hdr.cookie_r, suite, self._vids(payloads)
        self.ke = KeyExchange(suite.group)
        self.g_xi, self.nonce_i = self.ke.public, os.urandom(_NONCE_LEN)
        out = [Payload(PayloadType.KE, self.g_xi), Payload(PayloadType.NONCE, self.nonce_i), *self._certreq()]
        if self.peer_natt:
            out += self._nat_d(suite, self.cookie_r)
        msg = encode_plain(self.cookie_i, self.cookie_r, Exchange.MAIN, 0, out)
        self.p1_step = "mm4"
        self._arm(msg, now, "main mode message 3")
        return [msg]

    def _i_mm4(self, hdr, payloads, _iv, remote, now):
        ke = self._one(payloads, PayloadType.KE, "main mode message 4")
        nr = self._one(payloads, PayloadType.NONCE, "main mode message 4")
        nat_local, nat_remote = self._detect_nat(self.suite, self.cookie_r, payloads, remote)
        g_xy, keys = self._keys(self.suite, self.ke, ke.data, self.nonce_i, nr.data, self.cookie_i, self.cookie_r)
        self.g_xr, self.nonce_r, self.g_xy, self.keys = ke.data, nr.data, g_xy, keys
        self.nat_local, self.nat_remote = nat_local, nat_remote
        if (nat_local or nat_remote) and self.peer_natt:
            self.use_natt = True
            self.remote = (self.remote[0], self.config.remote_natt_port)
        cfg = self.config
        idp = IDPayload(cfg.local_id.id_type, cfg.local_id.data)
        h = hash_i(self.suite, keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, self.cookie_r, self.sa_i_b, idp.body())
        msg, self.p1_iv = self._seal(Exchange.MAIN, 0, [idp, *self._proof(h)],
                                     phase1_iv(self.suite, self.g_xi, self.g_xr))
        self.p1_step = "mm6"
        self._arm(msg, now, "main mode message 5")
        return [msg]

    def _i_mm6(self, hdr, payloads, iv_after, remote, now):
        idp = self._one(payloads, PayloadType.ID, "main mode message 6")
        ident = self._check_id(idp)
        want = hash_r(self.suite, self.keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, self.cookie_r, self.sa_i_b,
                      idp.raw[4:])
        self._check_proof(payloads, idp, want, "main mode message 6")
        self.remote_identity, self.last_p1_block = ident, iv_after
        self._established()
        return []

    # -- main mode, responder ----------------------------------------------------------------------------

    def _r_mm1(self, hdr, payloads, _iv, remote, now):
        sa = self._one(payloads, PayloadType.SA, "main mode message 1")
        reply_sa, suite = self._choose(sa)
        self.cookie_i, self.suite, self.sa_i_b = hdr.cookie_i, suite, sa.raw[4:]
        self.peer_natt, self.remote, self.state = self._vids(payloads), remote, "connecting"
        out = [reply_sa] + ([Payload(PayloadType.VID, VID_NATT_RFC3947)] if self.peer_natt else []) + \
            [Payload(PayloadType.VID, VID_DPD)]
        self.p1_step = "mm3"
        return [encode_plain(self.cookie_i, self.cookie_r, Exchange.MAIN, 0, out)]

    def _r_mm3(self, hdr, payloads, _iv, remote, now):
        ke = self._one(payloads, PayloadType.KE, "main mode message 3")
        ni = self._one(payloads, PayloadType.NONCE, "main mode message 3")
        nat_local, nat_remote = self._detect_nat(self.suite, self.cookie_r, payloads, remote)
        mine = KeyExchange(self.suite.group)
        nonce_r = os.urandom(_NONCE_LEN)
        g_xy, keys = self._keys(self.suite, mine, ke.data, ni.data, nonce_r, self.cookie_i, self.cookie_r)
        self.ke, self.g_xi, self.g_xr, self.g_xy, self.keys = mine, ke.data, mine.public, g_xy, keys
        self.nonce_i, self.nonce_r, self.nat_local, self.nat_remote = ni.data, nonce_r, nat_local, nat_remote
        self.p1_iv = phase1_iv(self.suite, self.g_xi, self.g_xr)
        out = [Payload(PayloadType.KE, self.g_xr), Payload(PayloadType.NONCE, nonce_r), *self._certreq()]
        if any(p.type == PayloadType.NAT_D for p in payloads):
            out += self._nat_d(self.suite, self.cookie_r)
        self.p1_step = "mm5"
        return [encode_plain(self.cookie_i, self.cookie_r, Exchange.MAIN, 0, out)]

    def _r_mm5(self, hdr, payloads, iv_after, remote, now):
        idp = self._one(payloads, PayloadType.ID, "main mode message 5")
        ident = self._check_id(idp)
        want = hash_i(self.suite, self.keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, self.cookie_r, self.sa_i_b,
                      idp.raw[4:])
        self._check_proof(payloads, idp, want, "main mode message 5")
        cfg = self.config
        mine = IDPayload(cfg.local_id.id_type, cfg.local_id.data)
        hr = hash_r(self.suite, self.keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, self.cookie_r, self.sa_i_b,
                    mine.body())
        msg, self.last_p1_block = self._seal(Exchange.MAIN, 0, [mine, *self._proof(hr)], iv_after)
        self.remote_identity = ident
        self._established()
        return [msg]

    # -- aggressive mode -----------------------------------------------------------------------------------

    def _r_am1(self, hdr, payloads, _iv, remote, now):
        what = "aggressive mode message 1"
        sa = self._one(payloads, PayloadType.SA, what)
        ke, ni = self._one(payloads, PayloadType.KE, what), self._one(payloads, PayloadType.NONCE, what)
        idp = self._one(payloads, PayloadType.ID, what)
        reply_sa, suite = self._choose(sa)
        ident = self._check_id(idp)
        cky_i, cky_r = hdr.cookie_i, self.cookie_r
        mine, nonce_r = KeyExchange(suite.group), os.urandom(_NONCE_LEN)
        g_xy, keys = self._keys(suite, mine, ke.data, ni.data, nonce_r, cky_i, cky_r)
        cfg = self.config
        my_id = IDPayload(cfg.local_id.id_type, cfg.local_id.data)
        sa_i_b = sa.raw[4:]
        hr = hash_r(suite, keys.skeyid, ke.data, mine.public, cky_i, cky_r, sa_i_b, my_id.body())
        self.suite, self.sa_i_b, self.ke, self.g_xi, self.g_xr, self.g_xy, self.keys = \
            suite, sa_i_b, mine, ke.data, mine.public, g_xy, keys
        self.nonce_i, self.nonce_r, self.remote_identity, self._id_i = ni.data, nonce_r, ident, idp
        self.cookie_i, self.peer_natt, self.remote, self.state = cky_i, self._vids(payloads), remote, "connecting"
        out = [reply_sa, Payload(PayloadType.KE, self.g_xr), Payload(PayloadType.NONCE, nonce_r), my_id,
               Payload(PayloadType.HASH, hr)]
        if self.peer_natt:
            out += [Payload(PayloadType.VID, VID_NATT_RFC3947)] + self._nat_d(suite, cky_r)
        out.append(Payload(PayloadType.VID, VID_DPD))
        self.p1_step = "am3"
        self.p1_iv = phase1_iv(suite, self.g_xi, self.g_xr)
        return [encode_plain(cky_i, cky_r, Exchange.AGGRESSIVE, 0, out)]

    def _i_am2(self, hdr, payloads, _iv, remote, now):
        what = "aggressive mode message 2"
        sa = self._one(payloads, PayloadType.SA, what)
        ke, nr = self._one(payloads, PayloadType.KE, what), self._one(payloads, PayloadType.NONCE, what)
        idp, h = self._one(payloads, PayloadType.ID, what), self._one(payloads, PayloadType.HASH, what)
        suite = self._accept_choice(sa)
        if suite.group != self.ke.group:
            raise Refused("responder chose a group other than our key exchange's")
        if hdr.cookie_r == bytes(8):
            raise Refused("responder cookie is zero")
        ident = self._check_id(idp)
        cky_r = hdr.cookie_r
        g_xy, keys = self._keys(suite, self.ke, ke.data, self.nonce_i, nr.data, self.cookie_i, cky_r)
        want = hash_r(suite, keys.skeyid, self.g_xi, ke.data, self.cookie_i, cky_r, self.sa_i_b, idp.raw[4:])
        if not hmac.compare_digest(h.data, want):
            raise Refused("HASH_R does not verify (wrong pre-shared key?)")
        peer_natt = self._vids(payloads)
        nat_local, nat_remote = self._detect_nat(suite, cky_r, payloads, remote)
        self.cookie_r, self.suite, self.g_xr, self.g_xy, self.keys, self.nonce_r = cky_r, suite, ke.data, g_xy, keys, \
            nr.data
        self.remote_identity, self.peer_natt, self.nat_local, self.nat_remote = ident, peer_natt, nat_local, nat_remote
        hi = hash_i(suite, keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, cky_r, self.sa_i_b, self._id_i.body())
        out = [Payload(PayloadType.HASH, hi)] + (self._nat_d(suite, cky_r) if peer_natt else [])
        msg = encode_plain(self.cookie_i, cky_r, Exchange.AGGRESSIVE, 0, out)
        if (nat_local or nat_remote) and peer_natt:
            self.use_natt = True
            self.remote = (self.remote[0], self.config.remote_natt_port)
        # the third message goes in the clear (RFC 2409 §5.4): the CBC chain starts from the phase 1 IV
        self.last_p1_block = phase1_iv(suite, self.g_xi, self.g_xr)
        self._established()
        return [msg]

    def _r_am3(self, hdr, payloads, iv_after, remote, now):
        h = self._one(payloads, PayloadType.HASH, "aggressive mode message 3")
        want = hash_i(self.suite, self.keys.skeyid, self.g_xi, self.g_xr, self.cookie_i, self.cookie_r, self.sa_i_b,
                      self._id_i.raw[4:])
        if not hmac.compare_digest(h.data, want):
            raise Refused("HASH_I does not verify (wrong pre-shared key?)")
        nat_local, nat_remote = self._detect_nat(self.suite, self.cookie_r, payloads, remote)
        self.nat_local, self.nat_remote = self.nat_local or nat_local, self.nat_remote or nat_remote
        self.last_p1_block = iv_after or self.p1_iv
        self._established()
        return []


def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed
