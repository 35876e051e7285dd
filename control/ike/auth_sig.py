"""RFC 7427 Digital Signature authentication (AUTH method 14): RSA PKCS#1 v1.5 and PSS, ECDSA and
Ed25519, with the signature algorithm named by an ASN.1 AlgorithmIdentifier inside the AUTH data,
and the SIGNATURE_HASH_ALGORITHMS notify (§4)."""

from __future__ import annotations

import enum
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from control.ike.der import DerError, children, oid_decode, oid_encode, read_tlv, tlv


class HashAlg(enum.IntEnum):        # RFC 7427 §7 / IANA "IKEv2 Hash Algorithms"
    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


# what we announce and accept; SHA-1 is deliberately left out
SUPPORTED = (HashAlg.SHA2_256, HashAlg.SHA2_384, HashAlg.SHA2_512, HashAlg.IDENTITY)

_HASHES = {HashAlg.SHA2_256: hashes.SHA256, HashAlg.SHA2_384: hashes.SHA384, HashAlg.SHA2_512: hashes.SHA512}
_HASH_OIDS = {HashAlg.SHA2_256: "2.16.840.1.101.3.4.2.1", HashAlg.SHA2_384: "2.16.840.1.101.3.4.2.2",
              HashAlg.SHA2_512: "2.16.840.1.101.3.4.2.3"}
_RSA_OIDS = {HashAlg.SHA2_256: "1.2.840.113549.1.1.11", HashAlg.SHA2_384: "1.2.840.113549.1.1.12",
             HashAlg.SHA2_512: "1.2.840.113549.1.1.13"}
_ECDSA_OIDS = {HashAlg.SHA2_256: "1.2.840.10045.4.3.2", HashAlg.SHA2_384: "1.2.840.10045.4.3.3",
               HashAlg.SHA2_512: "1.2.840.10045.4.3.4"}
RSA_PSS_OID = "1.2.840.113549.1.1.10"
MGF1_OID = "1.2.840.113549.1.1.8"
ED25519_OID = "1.3.101.112"
_NULL = b"\x05\x00"
# the hash that goes with each curve, as strongSwan picks it
_CURVE_HASH = {"secp256r1": HashAlg.SHA2_256, "secp384r1": HashAlg.SHA2_384, "secp521r1": HashAlg.SHA2_512}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SignatureError(ValueError):
    pass


def hash_algorithms_notify_data(algs: tuple[HashAlg, ...] = SUPPORTED) -> bytes:
    return b"".join(struct.pack("!H", a) for a in algs)


def parse_hash_algorithms(data: bytes) -> set[int]:
    if len(data) % 2:
        raise SignatureError("SIGNATURE_HASH_ALGORITHMS of odd length")
    return {struct.unpack_from("!H", data, i)[0] for i in range(0, len(data), 2)}


def _alg_id(oid: str, params: bytes = b"") -> bytes:
    return tlv(0x30, oid_encode(oid) + params)


def _pss_params(h: HashAlg) -> bytes:
    hash_id = _alg_id(_HASH_OIDS[h], _NULL)
    salt = _HASHES[h].digest_size
    return tlv(0x30, tlv(0xA0, hash_id) + tlv(0xA1, _alg_id(MGF1_OID, hash_id)) + tlv(0xA2, tlv(0x02, bytes([salt]))))


def _pick_hash(preferred: HashAlg, peer: set[int] | None) -> HashAlg:
    if peer is None or preferred in peer:
        return preferred
    for h in (HashAlg.SHA2_256, HashAlg.SHA2_384, HashAlg.SHA2_512):
        if h in peer:
            return h
    raise SignatureError("the peer announced no hash algorithm we can sign with")


def sign(key: PrivateKey, octets: bytes, peer_hashes: set[int] | None = None, rsa_pss: bool = False) -> bytes:
    """AUTH data for method 14: the AlgorithmIdentifier's length, itself, and the signature."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if peer_hashes is not None and HashAlg.IDENTITY not in peer_hashes:
            raise SignatureError("the peer did not announce the identity hash that Ed25519 needs")
        alg, sig = _alg_id(ED25519_OID), key.sign(octets)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        h = _pick_hash(_CURVE_HASH[key.curve.name], peer_hashes)
        alg, sig = _alg_id(_ECDSA_OIDS[h]), key.sign(octets, ec.ECDSA(_HASHES[h]()))
    elif isinstance(key, rsa.RSAPrivateKey):
        h = _pick_hash(HashAlg.SHA2_256, peer_hashes)
        if rsa_pss:
            pad = padding.PSS(padding.MGF1(_HASHES[h]()), _HASHES[h].digest_size)
            alg, sig = _alg_id(RSA_PSS_OID, _pss_params(h)), key.sign(octets, pad, _HASHES[h]())
        else:
            alg, sig = _alg_id(_RSA_OIDS[h], _NULL), key.sign(octets, padding.PKCS1v15(), _HASHES[h]())
    else:
        raise SignatureError(f"unsupported key type {type(key).__name__}")
    return bytes([len(alg)]) + alg + sig


def _hash_by_oid(oids: dict[HashAlg, str], oid: str) -> HashAlg | None:
    return next((h for h, o in oids.items() if o == oid), None)


def _parse_pss(params: bytes) -> tuple[HashAlg, int]:
    tag, value, end = read_tlv(params)
    if tag != 0x30 or end != len(params):
        raise SignatureError("bad RSASSA-PSS parameters")
    h, mgf_h, salt = HashAlg.SHA2_256, None, None
    for t, v in children(value):
        if t == 0xA0:
            h_oid = oid_decode(children(read_tlv(v)[1])[0][1])
            found = _hash_by_oid(_HASH_OIDS, h_oid)
            if found is None:
                raise SignatureError(f"RSASSA-PSS with unsupported hash {h_oid}")
            h = found
        elif t == 0xA1:
            parts = children(read_tlv(v)[1])
            if oid_decode(parts[0][1]) != MGF1_OID:
                raise SignatureError("RSASSA-PSS with a mask generation other than MGF1")
            mgf_h = _hash_by_oid(_HASH_OIDS, oid_decode(children(parts[1][1])[0][1]))
        elif t == 0xA2:
            salt = int.from_bytes(read_tlv(v)[1], "big")
    if mgf_h is not None and mgf_h != h:
        raise SignatureError("RSASSA-PSS with a different MGF1 hash is not supported")
    return h, _HASHES[h].digest_size if salt is None else salt


def verify(public_key: PublicKey, auth_data: bytes, octets: bytes, accepted: tuple[int, ...] = SUPPORTED) -> str:
    """Check AUTH data of method 14 against the peer's public key; returns the scheme's name.
    Raises SignatureError when it does not verify or uses an algorithm we do not accept."""
    if not auth_data or 1 + auth_data[0] > len(auth_data):
        raise SignatureError("AUTH data too short for its AlgorithmIdentifier")
    alg, sig = auth_data[1:1 + auth_data[0]], auth_data[1 + auth_data[0]:]
    try:
        tag, value, end = read_tlv(alg)
        parts = children(value)
        if tag != 0x30 or end != len(alg) or not parts or parts[0][0] != 0x06:
            raise SignatureError("bad AlgorithmIdentifier")
        oid = oid_decode(parts[0][1])
        params = alg[len(alg) - len(value) + len(tlv(0x06, parts[0][1])):] if len(parts) > 1 else b""
        try:
            if oid == ED25519_OID:
                if not isinstance(public_key, ed25519.Ed25519PublicKey):
                    raise SignatureError("Ed25519 signature but the certificate's key is not Ed25519")
                if HashAlg.IDENTITY not in accepted:
                    raise SignatureError("Ed25519 (identity hash) is not accepted")
                public_key.verify(sig, octets)
                return "ED25519"
            if (h := _hash_by_oid(_ECDSA_OIDS, oid)) is not None:
                if not isinstance(public_key, ec.EllipticCurvePublicKey):
                    raise SignatureError("ECDSA signature but the certificate's key is not ECDSA")
                _accept(h, accepted)
                public_key.verify(sig, octets, ec.ECDSA(_HASHES[h]()))
                return f"ECDSA-WITH-{h.name}"
            if (h := _hash_by_oid(_RSA_OIDS, oid)) is not None or oid == RSA_PSS_OID:
                if not isinstance(public_key, rsa.RSAPublicKey):
                    raise SignatureError("RSA signature but the certificate's key is not RSA")
                if h is not None:
                    _accept(h, accepted)
                    public_key.verify(sig, octets, padding.PKCS1v15(), _HASHES[h]())
                    return f"RSA-{h.name}"
                h, salt = _parse_pss(params)
                _accept(h, accepted)
                public_key.verify(sig, octets, padding.PSS(padding.MGF1(_HASHES[h]()), salt), _HASHES[h]())
                return f"RSA-PSS-{h.name}"
        except InvalidSignature:
            raise SignatureError("signature does not verify") from None
    except (DerError, IndexError):
        raise SignatureError("bad AlgorithmIdentifier") from None
    raise SignatureError(f"unsupported signature algorithm {oid}")


def scheme_name(auth_data: bytes) -> str:
    """The signature scheme AUTH data of method 14 names (ECDSA-WITH-SHA2_256, RSA-PSS, ED25519), for an
    explanation; "" when it names none we can read."""
    try:
        alg = auth_data[1:1 + auth_data[0]]
        oid = oid_decode(children(read_tlv(alg)[1])[0][1])
    except (DerError, IndexError):
        return ""
    if oid == ED25519_OID:
        return "ED25519"
    if oid == RSA_PSS_OID:
        return "RSA-PSS"
    for prefix, table in (("ECDSA-WITH-", _ECDSA_OIDS), ("RSA-", _RSA_OIDS)):
        if (h := _hash_by_oid(table, oid)) is not None:
            return prefix + h.name
    return f"signature algorithm {oid}"


def _accept(h: HashAlg, accepted: tuple[int, ...]) -> None:
    if h not in accepted:
        raise SignatureError(f"hash {h.name} is not accepted")
