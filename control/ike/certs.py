"""X.509 for IKE: our credentials, the peer's chain up to a configured CA, identities against a
certificate, CERTREQ hashes (RFC 7296 §3.6, §3.7) and DN identities in strongSwan's spelling."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from control.ike.constants import IdType
from control.ike.der import DerError, name_attributes

CERT_X509_SIGNATURE = 4      # RFC 7296 §3.6: "X.509 Certificate - Signature", DER
SUPPORTED_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

# strongSwan's short names (and a few long ones) for DN attributes
_DN_NAMES = {
    "C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS, "DC": NameOID.DOMAIN_COMPONENT, "SN": NameOID.SURNAME,
    "G": NameOID.GIVEN_NAME, "T": NameOID.TITLE, "UID": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER, "postalCode": NameOID.POSTAL_CODE,
}
_DN_ALIASES = {"emailAddress": "E", "Email": "E", "S": "ST", "SERIALNUMBER": "serialNumber"}
_OID_NAMES = {oid.dotted_string: short for short, oid in _DN_NAMES.items()}


class CertError(ValueError):
    """A certificate or key problem; the text names the file or the check, never key material."""


# ---- DNs ----

def _split_dn(text: str) -> list[str]:
    parts, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def dn_from_string(text: str) -> bytes:
    """``C=CH, O=strongSwan, CN=gw-a`` as the DER Name an ID_DER_ASN1_DN carries."""
    rdns = []
    for part in _split_dn(text):
        key, sep, value = part.partition("=")
        key = _DN_ALIASES.get(key.strip(), key.strip())
        if not sep:
            raise ValueError(f"DN {text!r}: {part!r} is not NAME=value")
        oid = _DN_NAMES.get(key) or _DN_NAMES.get(key.upper())
        if oid is None:
            try:
                oid = x509.ObjectIdentifier(key)
            except ValueError:
                raise ValueError(f"DN {text!r}: unknown attribute {key!r}") from None
        rdns.append(x509.NameAttribute(oid, value.strip()))
    if not rdns:
        raise ValueError(f"DN {text!r} is empty")
    try:
        return x509.Name(rdns).public_bytes()
    except ValueError as exc:
        raise ValueError(f"DN {text!r}: {exc}") from None


def dn_to_string(der: bytes) -> str:
    """A DER Name the way strongSwan prints it: ``C=CH, O=strongSwan, CN=gw-a``."""
    try:
        attrs = name_attributes(der)
    except DerError:
        return "#" + der.hex()
    return ", ".join(f"{_OID_NAMES.get(oid, oid)}={value}" for oid, value in attrs)


def dn_equal(a: bytes, b: bytes) -> bool:
    """Same attributes and values in the same order, whatever string types encode them."""
    try:
        return name_attributes(a) == name_attributes(b)
    except DerError:
        return a == b


# ---- credentials ----

@dataclass
class Credentials:
    """Our end-entity certificate (with any intermediates to send) and its private key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_key(self.key, "key")
        if spki(self.cert.public_key()) != spki(self.key.public_key()):
            raise CertError("key: the private key does not belong to the certificate")

    def __repr__(self) -> str:          # never the key
        return f"Credentials(subject={dn_to_string(self.cert.subject.public_bytes())!r})"


def spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def check_key(key: object, what: str) -> None:
    if not isinstance(key, SUPPORTED_KEYS + (rsa.RSAPublicKey, ec.EllipticCurvePublicKey,
                                             ed25519.Ed25519PublicKey)):
        raise CertError(f"{what}: unsupported key type {type(key).__name__} (RSA, ECDSA P-256/384/521 or Ed25519)")
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and \
            not isinstance(key.curve, _CURVES):
        raise CertError(f"{what}: unsupported curve {key.curve.name} (P-256, P-384 or P-521)")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size < 2048:
        raise CertError(f"{what}: RSA key of {key.key_size} bits, at least 2048 expected")


def load_cert(path: str | Path, what: str = "certs") -> x509.Certificate:
    """A PEM or DER certificate file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertError(f"{what}: {path} is not an X.509 certificate (PEM or DER)") from None


def load_key(path: str | Path, what: str = "key") -> object:
    """A PEM or DER private key (PKCS#8, PKCS#1 or SEC1), unencrypted."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, None)
        else:
            key = serialization.load_der_private_key(data, None)
    except (ValueError, TypeError):
        # the exception text could quote key bytes: say only what went wrong
        raise CertError(f"{what}: {path} is not an unencrypted private key (PEM or DER)") from None
    except Exception:  # noqa: BLE001 - cryptography raises UnsupportedAlgorithm for exotic keys
        raise CertError(f"{what}: {path} holds an unsupported key type") from None
    check_key(key, what)
    return key


def load_credentials(cert_path: str | Path, key_path: str | Path,
                     chain_paths: list[str | Path] | None = None) -> Credentials:
    cert = load_cert(cert_path, "certs")
    key = load_key(key_path, "key")
    try:
        return Credentials(cert, key, [load_cert(p, "certs") for p in chain_paths or []])  # type: ignore[arg-type]
    except CertError as exc:
        raise CertError(f"{exc} ({cert_path}, {key_path})") from None


# ---- CERTREQ ----

def ca_key_hash(ca: x509.Certificate) -> bytes:
    """RFC 7296 §3.7: SHA-1 of the CA's SubjectPublicKeyInfo."""
    return hashlib.sha1(spki(ca.public_key())).digest()


def certreq_data(cas: list[x509.Certificate]) -> bytes:
    return b"".join(ca_key_hash(c) for c in cas)


# ---- verifying the peer ----

def _valid_at(cert: x509.Certificate, when: datetime.datetime, what: str) -> None:
    if when < cert.not_valid_before_utc:
        raise CertError(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if when > cert.not_valid_after_utc:
        raise CertError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1      # old self-signed roots have no extensions


def verify_chain(end: x509.Certificate, intermediates: list[x509.Certificate], cas: list[x509.Certificate],
                 when: datetime.datetime | None = None) -> x509.Certificate:
    """end must be issued by a configured CA, directly or through one of the intermediates; every
    certificate on the way must be within its validity period.  Returns the trust anchor."""
    when = when or datetime.datetime.now(datetime.UTC)
    subject = dn_to_string(end.subject.public_bytes())
    _valid_at(end, when, f"certificate '{subject}'")
    for ca in cas:
        if _issued_by(end, ca):
            _valid_at(ca, when, f"CA certificate '{dn_to_string(ca.subject.public_bytes())}'")
            return ca
    for mid in intermediates:
        if not _issued_by(end, mid):
            continue
        if not _is_ca(mid):
            raise CertError(f"'{dn_to_string(mid.subject.public_bytes())}' issued the peer's certificate "
                            "but is not a CA")
        _valid_at(mid, when, f"intermediate '{dn_to_string(mid.subject.public_bytes())}'")
        for ca in cas:
            if _issued_by(mid, ca):
                _valid_at(ca, when, f"CA certificate '{dn_to_string(ca.subject.public_bytes())}'")
                return ca
    raise CertError(f"certificate '{subject}' (issuer '{dn_to_string(end.issuer.public_bytes())}') "
                    "is not issued by a configured CA")


def id_matches_cert(id_type: int, data: bytes, cert: x509.Certificate) -> bool:
    """The peer's ID names its certificate: the subject DN, or a subjectAltName of the ID's type."""
    if id_type == IdType.DER_ASN1_DN:
        return dn_equal(data, cert.subject.public_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_type == IdType.FQDN:
        name = data.decode(errors="replace").lower()
        return any(n.lower() == name for n in san.get_values_for_type(x509.DNSName))
    if id_type == IdType.RFC822_ADDR:
        name = data.decode(errors="replace").lower()
        return any(n.lower() == name for n in san.get_values_for_type(x509.RFC822Name))
    if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        try:
            addr = ipaddress.ip_address(data)
        except ValueError:
            return False
        return addr in san.get_values_for_type(x509.IPAddress)
    return False
