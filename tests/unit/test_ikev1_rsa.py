"""RSA signature authentication of IKEv1 main mode (RFC 2409 §5.1, control/ikev1/auth_rsa.py): the
signature checked by cryptography's own RSA (recovering the raw PKCS#1 block), our pair through main
mode with certificates, and the refusals: an untrusted CA, an ID the certificate does not name."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from support.ikev1_pair import Pair, configs
from support.pki import CA

from control.ike.certs import Credentials
from control.ike.config import Identity
from control.ike.events import ChildSaEstablished
from control.ikev1 import auth_rsa
from control.ikev1.config import Ikev1Config
from control.ikev1.events import IsakmpSaEstablished

CA_ = CA("ikev1 unit CA", "rsa")
A = CA_.issue("gw-a", "rsa", ["gw-a.example"])
B = CA_.issue("gw-b", "rsa", ["gw-b.example"])


def test_signature_is_pkcs1_type1_of_the_bare_hash() -> None:
    h = hashlib.sha256(b"HASH_I").digest()
    sig = auth_rsa.sign(A[1], h)
    # cryptography recovers the data under PKCS#1 v1.5 with no DigestInfo expected: the hash itself
    assert A[1].public_key().recover_data_from_signature(sig, padding.PKCS1v15(), None) == h
    assert auth_rsa.verify(A[0].public_key(), h, sig)
    assert not auth_rsa.verify(A[0].public_key(), h[:-1] + b"\0", sig)
    assert not auth_rsa.verify(B[0].public_key(), h, sig)
    assert not auth_rsa.verify(A[0].public_key(), h, sig[:-1])


def _rsa_configs(ca_i: CA = CA_, a_id: str = "gw-a.example") -> tuple[Ikev1Config, Ikev1Config]:
    ci, cr = configs()
    i = Ikev1Config(Identity.from_string(a_id), b"", ci.remote_id, ci.ike_proposals, ci.esp_proposals, ci.local_ts,
                    ci.remote_ts, auth="rsa", credentials=Credentials(*A), cacerts=[ca_i.cert])
    r = Ikev1Config(cr.local_id, b"", None, cr.ike_proposals, cr.esp_proposals, cr.local_ts, cr.remote_ts,
                    auth="rsa", credentials=Credentials(*B), cacerts=[CA_.cert])
    return i, r


def test_main_mode_with_rsa_signatures() -> None:
    pair = Pair(*_rsa_configs())
    pair.i.initiate(0.0)
    pair.run()
    up = pair.of("i", IsakmpSaEstablished)
    assert up and up[0].suite.auth == 3 and pair.of("r", IsakmpSaEstablished)
    ci, cr = pair.of("i", ChildSaEstablished), pair.of("r", ChildSaEstablished)
    assert ci[0].outbound.spi == cr[0].inbound.spi and ci[0].outbound.enc_key == cr[0].inbound.enc_key


@pytest.mark.parametrize("kind", ["untrusted CA", "ID not in the certificate"])
def test_rsa_refusals(kind: str) -> None:
    if kind == "untrusted CA":
        pair = Pair(*_rsa_configs(ca_i=CA("another CA", "rsa")))
    else:
        pair = Pair(*_rsa_configs(a_id="gw-x.example"))
    pair.i.initiate(0.0)
    pair.run()
    assert not pair.of("i", IsakmpSaEstablished)
    side = pair.i if kind == "untrusted CA" else pair.r
    reason = "is not issued by a configured CA" if kind == "untrusted CA" else "does not name its certificate"
    assert any(reason in k for k in side.stats), side.stats


def test_rsa_config_needs_credentials_and_cas() -> None:
    ci, _ = configs()
    with pytest.raises(ValueError, match="credentials"):
        Ikev1Config(ci.local_id, b"", auth="rsa")
    with pytest.raises(ValueError, match="cacerts"):
        Ikev1Config(ci.local_id, b"", auth="rsa", credentials=Credentials(*A))
    with pytest.raises(ValueError, match="auth"):
        Ikev1Config(ci.local_id, b"x", auth="xauth")
