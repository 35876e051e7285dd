"""Signature authentication of IKEv1 main mode (control/ikev1/auth_sig.py): RSA (RFC 2409 §5.1) checked
by cryptography's own RSA recovering the raw PKCS#1 block, ECDSA (RFC 4754) r | s checked by
cryptography's ECDSA; our pair through main mode with certificates of each kind, and the refusals: an
untrusted CA, an ID the certificate does not name."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from support.ikev1_pair import Pair, configs
from support.pki import CA

from control.ike.certs import Credentials
from control.ike.config import Identity
from control.ike.events import ChildSaEstablished
from control.ikev1 import auth_sig
from control.ikev1.config import Ikev1Config
from control.ikev1.constants import AuthMethod
from control.ikev1.events import IsakmpSaEstablished

CA_ = CA("ikev1 unit CA", "rsa")
KEYS = {kind: (CA_.issue("gw-a", kind, ["gw-a.example"]), CA_.issue("gw-b", kind, ["gw-b.example"]))
        for kind in ("rsa", "p256", "p384", "p521")}


def test_rsa_signature_is_pkcs1_type1_of_the_bare_hash() -> None:
    (cert_a, key_a), (cert_b, _) = KEYS["rsa"]
    h = hashlib.sha256(b"HASH_I").digest()
    sig = auth_sig.sign(key_a, h)
    # cryptography recovers the data under PKCS#1 v1.5 with no DigestInfo expected: the hash itself
    assert key_a.public_key().recover_data_from_signature(sig, padding.PKCS1v15(), None) == h
    rsa_sig = AuthMethod.RSA_SIG
    assert auth_sig.verify(cert_a.public_key(), rsa_sig, h, sig)
    assert not auth_sig.verify(cert_a.public_key(), rsa_sig, h[:-1] + b"\0", sig)
    assert not auth_sig.verify(cert_b.public_key(), rsa_sig, h, sig)
    assert not auth_sig.verify(cert_a.public_key(), rsa_sig, h, sig[:-1])
    assert not auth_sig.verify(cert_a.public_key(), AuthMethod.ECDSA_256, h, sig)


@pytest.mark.parametrize("kind,method,size,alg", [
    ("p256", AuthMethod.ECDSA_256, 32, hashes.SHA256), ("p384", AuthMethod.ECDSA_384, 48, hashes.SHA384),
    ("p521", AuthMethod.ECDSA_521, 66, hashes.SHA512)])
def test_ecdsa_signature_is_r_and_s_of_the_hash_as_digest(kind: str, method: int, size: int, alg) -> None:
    (cert_a, key_a), (cert_b, _) = KEYS[kind]
    assert auth_sig.auth_method(key_a) == method
    h = hashlib.new(alg.name, b"HASH_R").digest()
    sig = auth_sig.sign(key_a, h)
    assert len(sig) == 2 * size
    der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
    cert_a.public_key().verify(der, h, ec.ECDSA(Prehashed(alg())))        # raises if not
    assert auth_sig.verify(cert_a.public_key(), method, h, sig)
    assert not auth_sig.verify(cert_b.public_key(), method, h, sig)
    assert not auth_sig.verify(cert_a.public_key(), method, h, sig[::-1])
    assert not auth_sig.verify(cert_a.public_key(), AuthMethod.RSA_SIG, h, sig)


def _sig_configs(kind: str = "rsa", ca_i: CA = CA_, a_id: str = "gw-a.example") -> tuple[Ikev1Config, Ikev1Config]:
    ci, cr = configs()
    a, b = KEYS[kind]
    i = Ikev1Config(Identity.from_string(a_id), b"", ci.remote_id, ci.ike_proposals, ci.esp_proposals, ci.local_ts,
                    ci.remote_ts, auth="pubkey", credentials=Credentials(*a), cacerts=[ca_i.cert])
    r = Ikev1Config(cr.local_id, b"", None, cr.ike_proposals, cr.esp_proposals, cr.local_ts, cr.remote_ts,
                    auth="pubkey", credentials=Credentials(*b), cacerts=[CA_.cert])
    return i, r


@pytest.mark.parametrize("kind,method", [("rsa", 3), ("p256", 9), ("p384", 10), ("p521", 11)])
def test_main_mode_with_signatures(kind: str, method: int) -> None:
    pair = Pair(*_sig_configs(kind))
    pair.i.initiate(0.0)
    pair.run()
    up = pair.of("i", IsakmpSaEstablished)
    assert up and up[0].suite.auth == method and pair.of("r", IsakmpSaEstablished), (pair.i.stats, pair.r.stats)
    # RFC 4754 §7: with ECDSA, HASH_I/HASH_R are HMACs of the curve's hash, whatever hash was negotiated
    s = up[0].suite
    prf_hash = {9: "sha256", 10: "sha384", 11: "sha512"}.get(method, "sha256")
    assert len(s.auth_prf(b"k", b"d")) == hashlib.new(prf_hash).digest_size
    ci, cr = pair.of("i", ChildSaEstablished), pair.of("r", ChildSaEstablished)
    assert ci[0].outbound.spi == cr[0].inbound.spi and ci[0].outbound.enc_key == cr[0].inbound.enc_key


@pytest.mark.parametrize("why", ["untrusted CA", "ID not in the certificate"])
def test_signature_refusals(why: str) -> None:
    if why == "untrusted CA":
        pair = Pair(*_sig_configs(ca_i=CA("another CA", "rsa")))
    else:
        pair = Pair(*_sig_configs(a_id="gw-x.example"))
    pair.i.initiate(0.0)
    pair.run()
    assert not pair.of("i", IsakmpSaEstablished)
    side = pair.i if why == "untrusted CA" else pair.r
    reason = "is not issued by a configured CA" if why == "untrusted CA" else "does not name its certificate"
    assert any(reason in k for k in side.stats), side.stats


def test_pubkey_config_needs_credentials_and_cas() -> None:
    ci, _ = configs()
    with pytest.raises(ValueError, match="credentials"):
        Ikev1Config(ci.local_id, b"", auth="pubkey")
    with pytest.raises(ValueError, match="cacerts"):
        Ikev1Config(ci.local_id, b"", auth="pubkey", credentials=Credentials(*KEYS["rsa"][0]))
    with pytest.raises(ValueError, match="auth"):
        Ikev1Config(ci.local_id, b"x", auth="xauth")
