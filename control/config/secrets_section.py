"""The ``secrets:`` section (swanctl's ike-NAME pre-shared keys) and the choice of a connection's key.

A secret never reaches a message: a bad one is described by its shape only.
"""

from __future__ import annotations

import base64
import binascii

from control.config.checker import Checker
from control.config.model import SecretEntry
from control.config.validators import parse_identity
from control.config.yaml_tree import Node, Num
from control.ike.config import Identity


def _parse_secret(node: Node) -> bytes | None:
    """swanctl spellings: plain text, ``0x`` hex, ``0s`` base64."""
    v = node.value
    text = v.text if isinstance(v, Num) else v
    if not isinstance(text, str) or not text:
        return None
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            return None
    if text.startswith("0s"):
        try:
            return base64.b64decode(text[2:], validate=True)
        except (binascii.Error, ValueError):
            return None
    return text.encode()


def parse_secrets(ck: Checker, node: Node | None) -> list[SecretEntry]:
    out: list[SecretEntry] = []
    if node is None:
        return out
    for name, snode in ck.mapping(node, "secrets", None).items():
        path = f"secrets.{name}"
        if not name.startswith("ike"):
            ck.error(snode, path, "a section named ike or ike-NAME (pre-shared keys for IKE)", repr(name))
            continue
        m = ck.mapping(snode, path, None)
        ids: list[str] = []
        secret = None
        for key, v in m.items():
            if key == "id" or key.startswith("id-"):
                for text, item, p in ck.str_list(v, f"{path}.{key}"):
                    if parse_identity(ck, item, p) is not None:
                        ids.append(text)
            elif key == "secret":
                secret = _parse_secret(v)
                if secret is None:
                    # describe the shape only: never echo what may be a secret
                    ck.error(v, f"{path}.secret", "a non-empty string, 0x<hex> or 0s<base64>",
                             "a value that is none of these")
            else:
                ck.error(v, f"{path}.{key}", "id, id-<suffix> or secret", "an unknown key")
        if "secret" not in m:
            ck.error(snode, f"{path}.secret", "the pre-shared key", "nothing")
        if secret is not None:
            out.append(SecretEntry(name, ids, secret))
    return out


def _same_identity(text: str) -> Identity | str:
    # as strongSwan: "@gw.example" and "gw.example" are one FQDN identity, and "10.0.0.1" one address
    try:
        return Identity.from_string(text)
    except ValueError:
        return text


def find_psk(secrets: list[SecretEntry], local_id: str, remote_id: str | None) -> bytes | None:
    """The best secret: one whose ids name both ends, then one naming either, then one naming none.
    Ids compare as identities, not as spellings."""
    want = {_same_identity(local_id)} | ({_same_identity(remote_id)} if remote_id else set())
    best, score = None, -1
    for s in secrets:
        ids = {_same_identity(i) for i in s.ids}
        if ids and not ids & want:
            continue
        sc = len(ids & want) if ids else 0
        if sc > score:
            best, score = s.secret, sc
    return best
