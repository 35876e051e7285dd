"""A connection's ``local:`` and ``remote:`` sections: the authentication method, the identity, and for
``auth: pubkey`` the certificates and key, read from their files here."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from control.config.checker import Checker
from control.config.validators import parse_identity
from control.config.yaml_tree import Node
from control.ike.certs import CertError, Credentials, load_cert, load_key

_AUTH_KEYS = ("auth", "id", "certs", "cacerts", "pubkeys", "key", "rsa_pss")


def file_problem(text: str) -> str | None:
    """Why ``text`` names no file we could read, or None.  ``Path.exists`` answers only "missing" and
    raises for a name the system cannot hold (too long, a NUL byte), which a config can contain."""
    try:
        Path(text).stat()
    except ValueError:
        return "not a file name: it holds a NUL byte"
    except OSError as exc:
        return (exc.strerror or "cannot stat it").lower()
    return None


def parse_auth(ck: Checker, node: Node | None, path: str, required_id: bool) -> tuple[str, str | None]:
    if node is None:
        if required_id:
            ck.error(None, path, "a section with auth and id", "nothing")
        return "psk", None
    m = ck.mapping(node, path, _AUTH_KEYS)
    method = "psk"
    if "auth" in m:
        method = (ck.string(m["auth"], f"{path}.auth") or "psk").lower()
        if method not in ("psk", "pubkey"):
            ck.error(m["auth"], f"{path}.auth", "psk or pubkey", repr(method))
    ident = None
    if "id" in m:
        ident = parse_identity(ck, m["id"], f"{path}.id")
    elif required_id:
        ck.error(node, f"{path}.id", "our identity (an IP address, @fqdn or user@host)", "nothing")
    for key in ("certs", "cacerts", "pubkeys"):
        if key in m:
            for text, item, p in ck.str_list(m[key], f"{path}.{key}"):
                problem = file_problem(text)
                if problem:
                    ck.error(item, p, "a readable certificate/key file", f"{text[:200]!r} ({problem})")
    return method, ident


def parse_pubkey_material(ck: Checker, node: Node | None, path: str, method: str, local: bool) -> tuple[
        Credentials | None, list[x509.Certificate], bool]:
    """Certificate authentication: for our side (local) the certificate (certs[0], then intermediates)
    and its private key (key); for either side the trusted CA certificates (cacerts).  Files are read
    here, so a wrong file is reported with its field; key material never reaches a message."""
    m = node.value if node is not None and isinstance(node.value, dict) else {}
    cas: list[x509.Certificate] = []
    for text, item, p in ck.str_list(m["cacerts"], f"{path}.cacerts") if "cacerts" in m else []:
        if file_problem(text) is None:
            try:
                cas.append(load_cert(text, f"{path}.cacerts"))
            except CertError as exc:
                ck.error(item, p, "a CA certificate (PEM or DER)", str(exc).split(": ", 1)[-1])
    rsa_pss = bool(ck.boolean(m["rsa_pss"], f"{path}.rsa_pss")) if "rsa_pss" in m else False
    if not local or method != "pubkey":
        if "key" in m:
            ck.error(m["key"], f"{path}.key", "key only in the local section with auth: pubkey", "a key file")
        return None, cas, rsa_pss
    certs = ck.str_list(m["certs"], f"{path}.certs") if "certs" in m else []
    if not certs:
        ck.error(node, f"{path}.certs", "our certificate file (auth: pubkey)", "nothing")
    if "key" not in m:
        ck.error(node, f"{path}.key", "the private key file of our certificate (auth: pubkey)", "nothing")
        return None, cas, rsa_pss
    key_path = ck.string(m["key"], f"{path}.key")
    if not certs or key_path is None or any(file_problem(t) for t, _, _ in certs):
        return None, cas, rsa_pss
    problem = file_problem(key_path)
    if problem:
        ck.error(m["key"], f"{path}.key", "a readable private key file", f"{key_path[:200]!r} ({problem})")
        return None, cas, rsa_pss
    try:
        chain = [load_cert(t, p) for t, _, p in certs]
    except CertError as exc:
        ck.error(m["certs"], f"{path}.certs", "certificate files (PEM or DER)", str(exc).split(": ", 1)[-1])
        return None, cas, rsa_pss
    try:
        return Credentials(chain[0], load_key(key_path, "key"), chain[1:]), cas, rsa_pss  # type: ignore[arg-type]
    except CertError as exc:
        ck.error(m["key"], f"{path}.key", f"the private key of {certs[0][0]} (RSA >= 2048 bits, ECDSA "
                 "P-256/384/521 or Ed25519, unencrypted PEM/DER)", str(exc).split(": ", 1)[-1])
    return None, cas, rsa_pss
