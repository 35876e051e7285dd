"""Readers of values more than one section takes: IKE/ESP proposals and IKE identities."""

from __future__ import annotations

from control.config.checker import Checker
from control.config.yaml_tree import Node
from control.ike.config import Identity
from control.ike.proposals import ProposalError, parse_proposals


def parse_identity(ck: Checker, node: Node, path: str) -> str | None:
    text = ck.string(node, path)
    if text is None:
        return None
    try:
        Identity.from_string(text)
    except ValueError as exc:
        ck.error(node, path, "an IP address, an FQDN (@host.example), an email-style ID (user@host) or a DN "
                 "(C=CH, O=example, CN=gw-a)", str(exc))
        return None
    return text


def parse_proposal_list(ck: Checker, node: Node, path: str, protocol: str) -> list[str]:
    out = []
    example = {"ike": "aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384",
               "ah": "sha256, sha512-esn, aes128gmac-x25519"}.get(
                   protocol, "aes128gcm16, aes256-sha256, aes256gcm16-esn")
    for text, item, p in ck.str_list(node, path):
        parts = [x.strip() for x in text.split(",") if x.strip()]
        for part in parts:
            try:
                parse_proposals(part, protocol)
            except ProposalError as exc:
                ck.error(item, p, f"an {protocol.upper()} proposal in strongSwan keywords (e.g. {example})", str(exc))
                continue
            out.append(part)
    return out
