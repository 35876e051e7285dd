"""Signature authentication of IKEv1 phase 1: RSA (RFC 2409 §5.1) and ECDSA (RFC 4754), with the
peer's certificate from its CERT payload checked against the configured CAs and its ID with
control/ike/certs.py.

RSA: SIG_I / SIG_R are PKCS#1 v1.5 signatures (block type 1) of HASH_I / HASH_R themselves, with no
DigestInfo around the hash — the encoding strongSwan calls RSA_EMSA_PKCS1_NULL.  ECDSA (RFC 4754 §7):
HASH_I / HASH_R come from the HMAC of the curve's hash (``P1Suite.auth_prf``) and are signed as the
digest itself, no second hash, the signature r | s, each the size of the curve's order."""

from __future__ import annotations

import hmac

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from control.ike.certs import CertError, id_matches_cert, verify_chain
from control.ikev1.codec import Refused
from control.ikev1.constants import AuthMethod

CERT_X509_SIG = 4               # RFC 2408 §3.9 certificate encoding

# curve -> (auth method, hash, bytes of r and of s)
_ECDSA = {"secp256r1": (AuthMethod.ECDSA_256, hashes.SHA256, 32),
          "secp384r1": (AuthMethod.ECDSA_384, hashes.SHA384, 48),
          "secp521r1": (AuthMethod.ECDSA_521, hashes.SHA512, 66)}


def auth_method(key: object) -> int:
    """The phase 1 authentication method our private key signs with; another key raises ValueError."""
    if isinstance(key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIG
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _ECDSA:
        return _ECDSA[key.curve.name][0]
    raise ValueError("key: IKEv1 signatures need an RSA or an ECDSA P-256/P-384/P-521 key")


def _block(h: bytes, k: int) -> bytes:
    if len(h) > k - 11:
        raise ValueError("hash too long for the RSA modulus")
    return b"\x00\x01" + b"\xff" * (k - 3 - len(h)) + b"\x00" + h


def sign(key: object, h: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _, alg, size = _ECDSA[key.curve.name]
        r, s = decode_dss_signature(key.sign(h, ec.ECDSA(Prehashed(alg()))))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    # RSA: the raw private operation on the type 1 block of h (cryptography offers no NULL DigestInfo)
    priv = key.private_numbers()  # type: ignore[attr-defined]
    n = priv.public_numbers.n
    k = (n.bit_length() + 7) // 8
    m = int.from_bytes(_block(h, k), "big")
    # CRT: about four times faster than m^d mod n
    s1, s2 = pow(m, priv.dmp1, priv.p), pow(m, priv.dmq1, priv.q)
    sig = s2 + priv.q * ((priv.iqmp * (s1 - s2)) % priv.p)
    return sig.to_bytes(k, "big")


def verify(public_key: object, method: int, h: bytes, sig: bytes) -> bool:
    """Whether sig is the negotiated method's signature of h under the peer's public key."""
    if method == AuthMethod.RSA_SIG:
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
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in _ECDSA:
        return False
    want, alg, size = _ECDSA[public_key.curve.name]
    if method != want or len(sig) != 2 * size or len(h) != alg.digest_size:
        return False
    der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
    try:
        public_key.verify(der, h, ec.ECDSA(Prehashed(alg())))
    except InvalidSignature:
        return False
    return True


def peer_certificate(der: bytes | None, id_type: int, id_data: bytes, cacerts: list[x509.Certificate]
                     ) -> x509.Certificate:
    """The peer's certificate, trusted (issued by one of cacerts, in its validity) and naming its ID."""
    if der is None:
        raise Refused("peer sent no certificate (signature authentication needs one)")
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
