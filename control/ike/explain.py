"""Why a negotiation failed, in words an operator can act on.

A bare NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE or AUTHENTICATION_FAILED says nothing about what did not match.
The responder sees both sides, so it can say it: both proposal lists in strongSwan's keywords with the
closest pair and what differs, both traffic selector sets and their intersections, the expected and the
presented identity with the method and the check that failed.  The initiator only gets the notify back;
what it can add is what it offered.  Everything here is a pure function over proposals, selectors and
identities giving lines of text (the IKE tasks put them on ``IkeError.detail``); no secret ever enters:
a PSK mismatch is called just that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from control.ike.constants import ADDKE_TYPES, AuthMethod, Esn, IdType, ProtocolId, TransformType
from control.ike.sa_payload import Proposal, Transform
from control.ike.ts import intersect, ts_text
from control.ike.ts_payload import TrafficSelectorEntry

if TYPE_CHECKING:
    from control.ike.config import ChildConfig, Identity, IkeConfig

__all__ = ["proposal_keywords", "proposals_text", "proposal_mismatch", "ts_mismatch", "ts_widened", "auth_mismatch",
           "identity_text", "ike_offer", "auth_offer", "child_offer"]

# strongSwan's keywords for the transform IDs (IANA "IKEv2 Transform Attribute" registries); what
# control.ike.proposals parses is a subset, the rest is named so that a peer's offer reads as its config
_ENCR = {3: "3des", 11: "null", 12: "aes{}", 13: "aes{}ctr", 14: "aes{}ccm8", 15: "aes{}ccm12", 16: "aes{}ccm16",
         18: "aes{}gcm8", 19: "aes{}gcm12", 20: "aes{}gcm16", 21: "aes{}gmac", 23: "camellia{}",
         28: "chacha20poly1305"}
_INTEG = {1: "md5", 2: "sha1", 5: "aesxcbc", 8: "aescmac", 9: "aes128gmac", 10: "aes192gmac", 11: "aes256gmac",
          12: "sha256", 13: "sha384", 14: "sha512"}
_PRF = {1: "prfmd5", 2: "prfsha1", 4: "prfaesxcbc", 5: "prfsha256", 6: "prfsha384", 7: "prfsha512",
        8: "prfaescmac"}
_DH = {1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096",
       17: "modp6144", 18: "modp8192", 19: "ecp256", 20: "ecp384", 21: "ecp521", 22: "modp1024s160",
       23: "modp2048s224", 24: "modp2048s256", 25: "ecp192", 26: "ecp224", 27: "ecp224bp", 28: "ecp256bp",
       29: "ecp384bp", 30: "ecp512bp", 31: "x25519", 32: "x448", 35: "mlkem512", 36: "mlkem768", 37: "mlkem1024"}
# the PRF an integrity keyword implies in an IKE proposal (control.ike.proposals' rule, backwards)
_INTEG_PRF = {1: 1, 2: 2, 5: 4, 8: 8, 12: 5, 13: 6, 14: 7}
_TYPE_NAME = {TransformType.ENCR: "encryption", TransformType.PRF: "PRF", TransformType.INTEG: "integrity",
              TransformType.DH: "DH group", TransformType.ESN: "ESN",
              **{t: f"additional key exchange {t - 5} (ADDKE{t - 5})" for t in ADDKE_TYPES}}
_ADDKE_T = frozenset(ADDKE_TYPES)
# strongSwan's order within one proposal: cipher, integrity, PRF, group, ESN
_ORDER = (TransformType.ENCR, TransformType.INTEG, TransformType.PRF, TransformType.DH, TransformType.ESN)
_DH_T = TransformType.DH
_PROTO = {ProtocolId.IKE: "IKE", ProtocolId.AH: "AH", ProtocolId.ESP: "ESP"}


def _keyword(t: Transform) -> str:
    if t.type in _ADDKE_T:          # strongSwan 6: ke1_mlkem768, ke2_none
        return f"ke{t.type - 5}_" + (_DH.get(t.id, f"group{t.id}") if t.id else "none")
    if t.type == TransformType.ENCR:
        fmt = _ENCR.get(t.id)
        if fmt is None:
            return f"encr{t.id}" + (f"_{t.key_length}" if t.key_length else "")
        return fmt.format(t.key_length or "")
    if t.type == TransformType.ESN:
        return "esn" if t.id == Esn.YES else "noesn"
    table = {TransformType.INTEG: _INTEG, TransformType.PRF: _PRF, TransformType.DH: _DH}.get(t.type)
    if table is None:
        return f"transform{t.type}:{t.id}"
    return table.get(t.id, f"{_TYPE_NAME[t.type].split()[0].lower()}{t.id}")


def _counts(t: Transform) -> bool:
    # an INTEG or DH of NONE means "absent" (RFC 7296 §3.3.3); a lone "no ESN" is strongSwan's silent default
    return not (t.type in (TransformType.INTEG, TransformType.DH) and t.id == 0)


def proposal_keywords(p: Proposal, *, strip_dh: bool = False) -> str:
    """One proposal as swanctl.conf writes it: aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048-esn."""
    kws: list[str] = []
    implied = {_INTEG_PRF.get(t.id) for t in p.transforms if t.type == TransformType.INTEG and _counts(t)}
    for ttype in _ORDER:
        ts = [t for t in p.transforms if t.type == ttype and _counts(t) and not (strip_dh and ttype == _DH_T)]
        if ttype == TransformType.ESN and [t.id for t in ts] == [Esn.NO]:
            continue
        if ttype == TransformType.PRF and ts and {t.id for t in ts} == implied:
            continue        # strongSwan's shorthand: a non-AEAD IKE proposal's PRFs follow its integrity keywords
        kws += list(dict.fromkeys(_keyword(t) for t in ts))
    kws += [_keyword(t) for t in p.transforms if t.type not in _ORDER]
    return "-".join(kws) or "(empty)"



def proposals_text(proposals: Sequence[Proposal], *, strip_dh: bool = False) -> str:
    """A proposal list as swanctl.conf's comma-separated value."""
    return ", ".join(proposal_keywords(p, strip_dh=strip_dh) for p in proposals) or "(none)"


def _ids(p: Proposal, ttype: int) -> set[tuple[int, int | None]]:
    ids = {(t.id, t.key_length) for t in p.transforms if t.type == ttype and _counts(t)}
    # RFC 9370 §2.2.1: an additional key exchange a proposal leaves out is NONE (what keN_none accepts)
    return ids or ({(0, None)} if ttype in _ADDKE_T else ids)


def _types(p: Proposal, strip_dh: bool) -> set[int]:
    return {t.type for t in p.transforms if _counts(t) and not (strip_dh and t.type == _DH_T)}


def _compare(ours: Proposal, theirs: Proposal, strip_dh: bool) -> tuple[int, list[str]]:
    """(transform types in common, what differs) of one pair."""
    differs: list[str] = []
    if ours.protocol != theirs.protocol:
        differs.append(f"protocol: ours {_PROTO.get(ours.protocol, ours.protocol)}, "
                       f"theirs {_PROTO.get(theirs.protocol, theirs.protocol)}")
    common = 0
    for ttype in sorted(_types(ours, strip_dh) | _types(theirs, strip_dh), key=_rank):
        a, b = _ids(ours, ttype), _ids(theirs, ttype)
        if a & b:
            common += 1
            continue
        differs.append(f"{_TYPE_NAME.get(ttype, f'transform type {ttype}')}: ours {_kw_of(ours, ttype)}, "
                       f"theirs {_kw_of(theirs, ttype)}")
    if ours.protocol != theirs.protocol:
        common = 0
    return common, differs


def _rank(ttype: int) -> int:
    return _ORDER.index(ttype) if ttype in _ORDER else len(_ORDER) + ttype     # type: ignore[arg-type]


def _kw_of(p: Proposal, ttype: int) -> str:
    kws = list(dict.fromkeys(_keyword(t) for t in p.transforms if t.type == ttype and _counts(t)))
    if ttype == TransformType.ESN and not kws:
        return "noesn"
    return "/".join(kws) or "none"


def proposal_mismatch(ours: Sequence[Proposal], theirs: Sequence[Proposal], what: str, *,
                      strip_dh: bool = False) -> list[str]:
    """A responder's NO_PROPOSAL_CHOSEN: both lists, the closest pair (most transform types in common; the
    first such in the peer's order of preference) and what differs in it.  ``what`` names the lists (IKE,
    ESP, AH); ``strip_dh`` for the first CHILD SA, whose IKE_AUTH carries no key exchange."""
    lines = [f"our {what} proposals:   {proposals_text(ours, strip_dh=strip_dh)}",
             f"their {what} proposals: {proposals_text(theirs, strip_dh=strip_dh)}"]
    best: tuple[int, Proposal, Proposal, list[str]] | None = None
    for t in theirs:
        for o in ours:
            common, differs = _compare(o, t, strip_dh)
            if best is None or common > best[0]:
                best = (common, o, t, differs)
    if best is not None:
        _, o, t, differs = best
        lines.append(f"closest: ours {proposal_keywords(o, strip_dh=strip_dh)}, "
                     f"theirs {proposal_keywords(t, strip_dh=strip_dh)}")
        lines.append("differs: " + ("; ".join(differs) if differs else
                                    "each type has a common algorithm, but not one we can use"))
    if strip_dh:
        lines.append("(key exchange groups are not compared: IKE_AUTH's CHILD SA has no KE)")
    elif ours and theirs and _needs_addke(ours) and not any(t.type in _ADDKE_T and t.id for p in theirs
                                                              for t in p.transforms):
        needed = sorted({t.type for p in ours for t in p.transforms if t.type in _ADDKE_T})
        lines.append("the peer offers no additional key exchange (RFC 9370, e.g. ML-KEM) and every proposal "
                     f"of ours requires one; {', '.join(f'ke{t - 5}_none' for t in needed)} in our proposals "
                     "would make it optional")
    return lines


def _needs_addke(proposals: Sequence[Proposal]) -> bool:
    """Whether every proposal requires some additional key exchange (lists no NONE for one of its ADDKEs)."""
    return all(any(all(t.id for t in p.transforms if t.type == tt) for tt in {t.type for t in p.transforms} & _ADDKE_T)
               for p in proposals)


def _why_disjoint(a: TrafficSelectorEntry, b: TrafficSelectorEntry) -> str:
    if a.start.version != b.start.version:
        return f"IPv{a.start.version} against IPv{b.start.version}"
    if int(a.start) > int(b.end) or int(b.start) > int(a.end):
        return "the addresses do not overlap"
    if a.proto and b.proto and a.proto != b.proto:
        return f"protocol {a.proto} against {b.proto}"
    return "the ports do not overlap"


def _side(theirs: Sequence[TrafficSelectorEntry], ours: Sequence[TrafficSelectorEntry]) -> str:
    found = [x for p in theirs for q in ours if (x := intersect(p, q)) is not None]
    if found:
        return ", ".join(ts_text(x) for x in dict.fromkeys(found))
    whys = sorted({_why_disjoint(p, q) for p in theirs for q in ours})
    return "empty (" + "; ".join(whys) + ")" if whys else "empty"


def _ts_list(ts: Sequence[TrafficSelectorEntry]) -> str:
    return ", ".join(ts_text(t) for t in ts) or "(none)"


def ts_mismatch(children: Sequence[ChildConfig], tsi: Sequence[TrafficSelectorEntry],
                tsr: Sequence[TrafficSelectorEntry]) -> list[str]:
    """A responder's TS_UNACCEPTABLE: the peer's TSi (its side, our remote) and TSr (our side), and per
    child of ours its selectors and the two intersections, which say where it fails."""
    lines = [f"their TSi (their side): {_ts_list(tsi)}", f"their TSr (our side):   {_ts_list(tsr)}"]
    if not children:
        lines.append("we have no child to match them against")
    for c in children:
        lines.append(f"child {c.name}: ours local {_ts_list(c.local_ts)}, remote {_ts_list(c.remote_ts)}")
        lines.append(f"  TSi with our remote: {_side(tsi, c.remote_ts)}")
        lines.append(f"  TSr with our local:  {_side(tsr, c.local_ts)}")
    return lines


def ts_widened(tsi: Sequence[TrafficSelectorEntry], tsr: Sequence[TrafficSelectorEntry],
               local: Sequence[TrafficSelectorEntry], remote: Sequence[TrafficSelectorEntry]) -> list[str]:
    """An initiator's TS_UNACCEPTABLE: the responder answered with selectors outside what we asked for
    (it may only narrow them, RFC 7296 §2.9)."""
    return [f"their TSi {_ts_list(tsi)}, we asked for {_ts_list(local)}",
            f"their TSr {_ts_list(tsr)}, we asked for {_ts_list(remote)}"]


_ID_TYPE = {IdType.IPV4_ADDR: "IPv4 address", IdType.IPV6_ADDR: "IPv6 address", IdType.FQDN: "FQDN",
            IdType.RFC822_ADDR: "email (RFC 822)", IdType.DER_ASN1_DN: "DN"}
_METHOD = {AuthMethod.RSA_SIG: "RSA signature", AuthMethod.PSK: "PSK", AuthMethod.DSS: "DSS signature",
           AuthMethod.ECDSA_256: "ECDSA-256 signature", AuthMethod.ECDSA_384: "ECDSA-384 signature",
           AuthMethod.ECDSA_521: "ECDSA-521 signature",
           AuthMethod.DIGITAL_SIGNATURE: "digital signature (RFC 7427)"}


def identity_text(ident: Identity | None) -> str:
    """An identity with its type: FQDN gw-b.example, IPv4 address 192.0.2.1; None is "any"."""
    if ident is None:
        return "any (no remote_id configured)"
    return f"{_ID_TYPE.get(ident.id_type, f'ID type {ident.id_type}')} {ident}"


def method_text(method: int) -> str:
    return _METHOD.get(method, f"auth method {method}")


def auth_mismatch(check: str, presented: Identity, expected: Identity | None, ours: str, theirs: int,
                  scheme: str = "") -> list[str]:
    """An AUTHENTICATION_FAILED we decided: which check failed (identity mismatch, PSK mismatch, auth method,
    signature, certificate chain), the identities, and the methods (ours as configured: psk / pubkey)."""
    method = f"we expect {'PSK' if ours == 'psk' else 'a certificate signature (pubkey)'}, " \
             f"the peer used {method_text(theirs)}" + (f" ({scheme})" if scheme else "")
    return [f"check failed: {check}",
            f"presented identity: {identity_text(presented)}",
            f"expected identity:  {identity_text(expected)}",
            f"method: {method}"]


def ike_offer(cfg: IkeConfig, group: int | None = None) -> list[str]:
    """What an initiator offered in IKE_SA_INIT."""
    line = f"we offered IKE proposals: {proposals_text(cfg.proposals)}"
    if group:
        line += f" (KE payload {_DH.get(group, f'group {group}')})"
    return [line]


def auth_offer(cfg: IkeConfig) -> list[str]:
    """What an initiator presented in IKE_AUTH: its identity and method, and whom it expects."""
    return [f"we presented identity {identity_text(cfg.local_id)}, auth {cfg.local_auth}",
            f"we expect the peer as {identity_text(cfg.remote_id)}, auth {cfg.remote_auth}"]


def child_offer(child: ChildConfig, *, strip_dh: bool = False) -> list[str]:
    """What an initiator offered for a CHILD SA: its proposals and its TSi/TSr."""
    what = "AH" if child.is_ah else "ESP"
    return [f"we offered child {child.name}: {what} proposals {proposals_text(child.proposals, strip_dh=strip_dh)}",
            f"  TSi (our side) {_ts_list(child.local_ts)}, TSr (their side) {_ts_list(child.remote_ts)}"]
