"""RSA signature authentication of IKEv1 phase 1 (RFC 2409 §5.1): SIG_I / SIG_R are PKCS#1 v1.5
signatures (block type 1) of HASH_I / HASH_R themselves, with no DigestInfo around the hash — the
encoding strongSwan calls RSA_EMSA_PKCS1_NULL — and the peer's certificate from its CERT payload,
checked against the configured CAs and its ID with control/ike/certs.py."""

from __future__ import annotations

import hmac

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from control.ike.certs import CertError, id_matches_cert, verify_chain
from control.ikev1.codec import Refused

CERT_X509_SIG = 4               # RFC 2408 §3.9 certificate encoding


def _block(h: bytes, k: int) -> bytes:
    if len(h) > k - 11:
        raise ValueError("hash too long for the RSA modulus")
    return b"\x00\x01" + b"\xff" * (k - 3 - len(h)) + b"\x00" + h


def sign(key: rsa.RSAPrivateKey, h: bytes) -> bytes:
    """The raw RSA private operation on the type 1 block of h (cryptography offers no NULL DigestInfo)."""
    priv = key.private_numbers()
    n = priv.public_numbers.n
    k = (n.bit_length() + 7) // 8
    m = int.from_bytes(_block(h, k), "big")
    # CRT: about four times faster than m^d mod n
    s1, s2 = pow(m, priv.dmp1, priv.p), pow(m, priv.dmq1, priv.q)
    s = s2 + priv.q * ((priv.iqmp * (s1 - s2)) % priv.p)
    return s.to_bytes(k, "big")


def verify(public_key: object, h: bytes, sig: bytes) -> bool:
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    pub = public_key.public_numbers()
    k = (pub.n.bit_length() + 7) // 8
    if len(sig) != k:
        return False
    s = int.from_bytes(sig, "big")
    if s >= pub.n:
        return False
    return hmac.compare_digest(pow(s, pub.e, pub.n).to_bytes(k, "big"), _block(h, k))


def peer_certificate(der: bytes | None, id_type: int, id_data: bytes, cacerts: list[x509.Certificate]
                     ) -> x509.Certificate:
    """The peer's certificate, trusted (issued by one of cacerts, in its validity) and naming its ID."""
    if der is None:
        raise Refused("peer sent no certificate (RSA signature authentication needs one)")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Refused("peer's CERT payload is not a DER X.509 certificate") from None
    try:
        verify_chain(cert, [], cacerts)
    except CertError as exc:
        raise Refused(str(exc)) from None
    if not id_matches_cert(id_type, id_data, cert):
        raise Refused("peer's ID does not name its certificate")
    return cert
