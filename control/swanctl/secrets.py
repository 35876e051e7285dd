"""swanctl.conf's ``secrets`` section and identities into ipsecgw's ``secrets:`` (pre-shared IKE keys).

A secret's value is carried over as written (plain, ``0x`` hex, ``0s`` base64: ipsecgw reads the same
spellings) and never appears in a note.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from control.ike.config import Identity
from control.swanctl.parse import Section

__all__ = ["convert_identity", "convert_secrets"]

_OTHER_SECRETS = {
    "eap": "EAP is not supported", "xauth": "XAuth is not supported", "ntlm": "EAP is not supported",
    "ppk": "post-quantum preshared keys (RFC 8784) are not supported",
    "private": "private keys are named in local.key (import-swanctl finds a certificate's key by itself)",
    "rsa": "private keys are named in local.key (import-swanctl finds a certificate's key by itself)",
    "ecdsa": "private keys are named in local.key (import-swanctl finds a certificate's key by itself)",
    "pkcs8": "private keys are named in local.key (import-swanctl finds a certificate's key by itself)",
    "pkcs12": "PKCS#12 containers are not read: convert to PEM and name the files in local.certs/key",
    "token": "keys on tokens (PKCS#11) are not supported",
}
_ANY = ("", "%any", "%any4", "%any6")


def convert_identity(text: str) -> tuple[str | None, str | None]:
    """A swanctl identity as ipsecgw spells it, or (None, why not).  ``%any`` gives (None, None): leaving
    the id out means the same."""
    t = text.strip()
    if t in _ANY:
        return None, None
    kind, sep, rest = t.partition(":")
    if sep and kind in ("fqdn",):
        t = "@" + rest
    elif sep and kind in ("email", "rfc822", "userfqdn"):
        t = rest
    elif sep and kind in ("asn1dn", "dn"):
        t = rest
    elif sep and kind in ("ipv4", "ipv6", "ipv4net", "ipv6net", "ipv4range", "ipv6range", "keyid", "der_asn1_gn"):
        return None, f"{kind}: identities are not supported (write an address without the prefix)"
    if t.startswith(("@#", "@@")):
        return None, "@# (key id) and @@ identities are not supported"
    if "*" in t:
        return None, "wildcard identities are not supported"
    if t.startswith("@") and "=" not in t and "@" not in t[1:]:
        # one spelling for an FQDN: ipsecgw matches secrets to connections by the id as written
        t = t[1:]
        try:
            ipaddress.ip_address(t)
            return None, "an FQDN that reads as an IP address"
        except ValueError:
            pass
    try:
        Identity.from_string(t)
    except ValueError as exc:
        return None, str(exc)
    return t, None


def convert_secrets(sec: Section | None, note: Callable[[str, str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sec is None:
        return out
    for key in sec.settings:
        note(f"secrets.{key}", "a setting outside any secret section")
    for name, s in sec.sections.items():
        path = f"secrets.{name}"
        kind = next((k for k in ("ike", *_OTHER_SECRETS) if name.startswith(k)), None)
        if kind != "ike":
            note(path, _OTHER_SECRETS.get(kind or "", "not a secret type swanctl.conf(5) documents"))
            continue
        entry: dict[str, Any] = {}
        dropped = False
        for key, setting in s.settings.items():
            if key == "secret":
                continue
            if not key.startswith("id"):
                note(f"{path}.{key}", "not a setting of an ike secret (id<suffix>, secret)")
                continue
            ident, why = convert_identity(setting.value)
            if why:
                # a secret with fewer ids would serve more peers than it did: leave it all out
                note(f"{path}.{key}", f"{setting.value.strip()!r}: {why}; secret not converted")
                dropped = True
            elif ident is not None:
                suffix = key[2:].lstrip("-_")
                entry["id" + (f"-{suffix}" if suffix else "")] = ident
        secret = s.get("secret")
        if dropped:
            continue
        if not secret:
            note(f"{path}.secret", "no secret: section not converted")
            continue
        entry["secret"] = secret
        out[name] = entry
    return out
