"""A small test PKI built with `cryptography`: a CA, optional intermediates and end-entity certificates
with subjectAltNames, for the certificate tests (in process and against strongSwan)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC)


def new_key(kind: str):
    """kind: rsa (2048), rsa3072, rsa4096, p256, p384, p521, ed25519."""
    if kind == "rsa":
        key = rsa.generate_private_key(65537, 2048)
    elif kind == "rsa3072":
        key = rsa.generate_private_key(65537, 3072)
    elif kind == "rsa4096":
        key = rsa.generate_private_key(65537, 4096)
    elif kind in ("p256", "p384", "p521"):
        key = ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind])
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(kind)
    return key


def name(cn: str, o: str = "ipsecgw test") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_cert(subject: x509.Name, public_key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,
              sans: list[str] = (), not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
         .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    alt: list[x509.GeneralName] = []
    for s in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            alt.append(x509.RFC822Name(s) if "@" in s else x509.DNSName(s))
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, _hash_for(issuer_key))


class CA:
    def __init__(self, cn: str = "ipsecgw test CA", kind: str = "p256", parent: CA | None = None):
        self.key = new_key(kind)
        self.name = name(cn)
        if parent is None:
            self.cert = make_cert(self.name, self.key.public_key(), self.name, self.key, ca=True)
        else:
            self.cert = make_cert(self.name, self.key.public_key(), parent.name, parent.key, ca=True)

    def issue(self, cn: str, kind: str = "p256", sans: list[str] = (), **kw):
        key = new_key(kind)
        return make_cert(name(cn), key.public_key(), self.name, self.key, sans=sans, **kw), key


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path
