"""IKEv1 proposals written with strongSwan's keywords, as phase 1 and ESP transforms, and the
responder's choice among a peer's.

``ike_transforms("aes256-sha256-modp2048, aes128-sha1-modp2048", ...)`` gives one KEY_IKE transform for
every cipher x hash x group combination (IKEv1 has no alternatives inside a transform);
``esp_transforms("aes128-sha256-modp2048")`` the ESP transforms of quick mode, the group meaning PFS.
The chosen ESP transform becomes control.ike's ``EspSuite`` (through control.ike.proposals' table), so
the SAs it keys are the data plane's the same way IKEv2's are.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from control.ike.constants import DhGroup, Encr, Esn, Integ, ProtocolId, TransformType
from control.ike.crypto import SUPPORTED_GROUPS
from control.ike.proposals import EspSuite, ProposalError, esp_suite
from control.ike.sa_payload import Proposal as V2Proposal
from control.ike.sa_payload import Transform as V2Transform
from control.ikev1.codec import Attr, Transform
from control.ikev1.constants import (
    KEY_IKE,
    Encapsulation,
    EspId,
    LifeType,
    P1Attr,
    P1Encr,
    P1Hash,
    P2Attr,
    P2Auth,
)
from control.ikev1.keys import P1Suite

_HASH_KW = {"sha1": P1Hash.SHA1, "sha": P1Hash.SHA1, "sha256": P1Hash.SHA2_256, "sha2_256": P1Hash.SHA2_256,
            "sha384": P1Hash.SHA2_384, "sha2_384": P1Hash.SHA2_384, "sha512": P1Hash.SHA2_512,
            "sha2_512": P1Hash.SHA2_512}
_ESP_AUTH_KW = {"sha256": P2Auth.HMAC_SHA2_256, "sha2_256": P2Auth.HMAC_SHA2_256, "sha384": P2Auth.HMAC_SHA2_384,
                "sha2_384": P2Auth.HMAC_SHA2_384, "sha512": P2Auth.HMAC_SHA2_512, "sha2_512": P2Auth.HMAC_SHA2_512}
_DH_KW = {"modp2048": DhGroup.MODP_2048, "ecp256": DhGroup.ECP_256, "ecp384": DhGroup.ECP_384,
          "ecp521": DhGroup.ECP_521, "curve25519": DhGroup.CURVE25519, "x25519": DhGroup.CURVE25519}
_AES = re.compile(r"^aes(128|192|256)?$")
_GCM = re.compile(r"^aes(128|256)gcm(16|128)$")
_V2_INTEG = {P2Auth.HMAC_SHA2_256: Integ.HMAC_SHA2_256_128, P2Auth.HMAC_SHA2_384: Integ.HMAC_SHA2_384_192,
             P2Auth.HMAC_SHA2_512: Integ.HMAC_SHA2_512_256}


def ike_transforms(text: str, auth: int, lifetime: int) -> list[Transform]:
    """Phase 1 transforms for comma-separated strongSwan IKE proposals, in order of preference."""
    out: list[Transform] = []
    for part in (p for p in text.split(",") if p.strip()):
        encrs, hashes, groups = [], [], []
        for kw in part.strip().lower().split("-"):
            m = _AES.match(kw)
            if m:
                encrs.append(int(m.group(1) or 128))
            elif kw in _HASH_KW:
                hashes.append(_HASH_KW[kw])
            elif kw in _DH_KW:
                groups.append(_DH_KW[kw])
            else:
                raise ProposalError(f"unknown or unsupported IKEv1 proposal keyword {kw!r} in {part.strip()!r}")
        if not (encrs and hashes and groups):
            raise ProposalError(f"{part.strip()!r}: an IKEv1 proposal needs a cipher, a hash and a DH group")
        for bits, h, g in itertools.product(encrs, hashes, groups):
            out.append(Transform(len(out) + 1, KEY_IKE, [
                (P1Attr.ENCR, P1Encr.AES_CBC), (P1Attr.KEY_LENGTH, bits), (P1Attr.HASH, h), (P1Attr.AUTH, auth),
                (P1Attr.GROUP, g), (P1Attr.LIFE_TYPE, LifeType.SECONDS), (P1Attr.LIFE_DURATION, lifetime)]))
    if not out:
        raise ProposalError("no proposal given")
    return out


def p1_suite(t: Transform) -> P1Suite:
    """The algorithms of a phase 1 transform; one we cannot run raises ProposalError."""
    if t.transform_id != KEY_IKE:
        raise ProposalError(f"phase 1 transform ID {t.transform_id} is not KEY_IKE")
    encr, bits, h = t.attr(P1Attr.ENCR), t.attr(P1Attr.KEY_LENGTH), t.attr(P1Attr.HASH)
    auth, group = t.attr(P1Attr.AUTH), t.attr(P1Attr.GROUP)
    if encr != P1Encr.AES_CBC or bits not in (128, 192, 256):
        raise ProposalError(f"phase 1 cipher {encr}/{bits} is not supported (AES-CBC only)")
    if h not in HASHES:
        raise ProposalError(f"phase 1 hash {h} is not supported")
    if group not in SUPPORTED_GROUPS:
        raise ProposalError(f"DH group {group} is not supported")
    if auth is None:
        raise ProposalError("phase 1 transform without an authentication method")
    life = 0
    for (atype, value), nxt in zip(t.attrs, t.attrs[1:] + [(0, 0)], strict=True):
        if atype == P1Attr.LIFE_TYPE and value == LifeType.SECONDS and nxt[0] == P1Attr.LIFE_DURATION:
            life = nxt[1] if isinstance(nxt[1], int) else int.from_bytes(nxt[1], "big")
    return P1Suite(encr, bits, h, auth, group, life)


HASHES = frozenset(int(h) for h in (P1Hash.SHA1, P1Hash.SHA2_256, P1Hash.SHA2_384, P1Hash.SHA2_512))


def choose_p1(ours: list[Transform], theirs: list[Transform]) -> Transform | None:
    """A responder's choice: the first of the peer's transforms whose algorithms match one of ours
    (lifetimes are the peer's to propose; we take theirs)."""
    mine = set()
    for t in ours:
        s = p1_suite(t)
        mine.add((s.encr, s.key_bits, s.hash, s.auth, s.group))
    for t in theirs:
        try:
            s = p1_suite(t)
        except ProposalError:
            continue
        if (s.encr, s.key_bits, s.hash, s.auth, s.group) in mine:
            return t
    return None


# -- ESP ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EspChoice:
    """A chosen ESP transform: the data plane's suite, PFS group (0: none) and lifetime."""

    suite: EspSuite
    transform_id: int
    key_bits: int
    auth: int | None
    pfs_group: int
    lifetime: int


def esp_transforms(text: str, lifetime: int, udp: bool = False) -> list[Transform]:
    """ESP transforms for comma-separated strongSwan ESP proposals; a DH keyword asks for PFS."""
    encap = Encapsulation.UDP_TUNNEL if udp else Encapsulation.TUNNEL
    out: list[Transform] = []
    for part in (p for p in text.split(",") if p.strip()):
        ciphers: list[tuple[int, int]] = []
        auths, groups = [], []
        for kw in part.strip().lower().split("-"):
            m, g = _AES.match(kw), _GCM.match(kw)
            if m:
                ciphers.append((EspId.AES_CBC, int(m.group(1) or 128)))
            elif g:
                ciphers.append((EspId.AES_GCM_16, int(g.group(1))))
            elif kw in _ESP_AUTH_KW:
                auths.append(_ESP_AUTH_KW[kw])
            elif kw in _DH_KW:
                groups.append(_DH_KW[kw])
            elif kw == "noesn":
                pass
            else:
                raise ProposalError(f"unknown or unsupported IKEv1 ESP keyword {kw!r} in {part.strip()!r}")
        if not ciphers:
            raise ProposalError(f"{part.strip()!r}: no cipher")
        for (tid, bits), auth, group in itertools.product(ciphers, auths or [None], groups or [0]):
            if (tid == EspId.AES_GCM_16) != (auth is None):
                raise ProposalError(f"{part.strip()!r}: AES-CBC needs an integrity algorithm, AES-GCM takes none")
            attrs: list[Attr] = [(P2Attr.LIFE_TYPE, LifeType.SECONDS), (P2Attr.LIFE_DURATION, lifetime),
                                 (P2Attr.ENCAPSULATION, encap), (P2Attr.KEY_LENGTH, bits)]
            if auth is not None:
                attrs.append((P2Attr.AUTH, auth))
            if group:
                attrs.append((P2Attr.GROUP, group))
            out.append(Transform(len(out) + 1, tid, attrs))
    if not out:
        raise ProposalError("no proposal given")
    return out


def esp_choice(t: Transform) -> EspChoice:
    """What a chosen ESP transform means; one the data plane cannot run raises ProposalError."""
    bits, auth, group = t.attr(P2Attr.KEY_LENGTH), t.attr(P2Attr.AUTH), t.attr(P2Attr.GROUP) or 0
    if t.transform_id == EspId.AES_CBC:
        encr = V2Transform(TransformType.ENCR, Encr.AES_CBC, bits)
    elif t.transform_id == EspId.AES_GCM_16:
        encr = V2Transform(TransformType.ENCR, Encr.AES_GCM_16, bits)
    else:
        raise ProposalError(f"ESP transform {t.transform_id} is not supported")
    ts = [encr]
    if auth is not None:
        if auth not in _V2_INTEG:
            raise ProposalError(f"ESP authentication algorithm {auth} is not supported")
        ts.append(V2Transform(TransformType.INTEG, _V2_INTEG[P2Auth(auth)]))
    ts.append(V2Transform(TransformType.ESN, Esn.NO))
    if group and group not in SUPPORTED_GROUPS:
        raise ProposalError(f"PFS group {group} is not supported")
    suite = esp_suite(V2Proposal(1, ProtocolId.ESP, b"", ts))
    life = 0
    for (atype, value), nxt in zip(t.attrs, t.attrs[1:] + [(0, 0)], strict=True):
        if atype == P2Attr.LIFE_TYPE and value == LifeType.SECONDS and nxt[0] == P2Attr.LIFE_DURATION:
            life = nxt[1] if isinstance(nxt[1], int) else int.from_bytes(nxt[1], "big")
    return EspChoice(suite, t.transform_id, bits or 0, auth, group, life)


def _esp_key(t: Transform) -> tuple:
    return (t.transform_id, t.attr(P2Attr.KEY_LENGTH), t.attr(P2Attr.AUTH), t.attr(P2Attr.GROUP) or 0,
            _tunnel(t.attr(P2Attr.ENCAPSULATION)))


def _tunnel(mode: int | None) -> bool:
    # a NAT changes tunnel (1) into UDP-tunnel (3, or the drafts' 61443): still tunnel mode
    return mode in (Encapsulation.TUNNEL, Encapsulation.UDP_TUNNEL, 61443)


def choose_esp(ours: list[Transform], theirs: list[Transform]) -> Transform | None:
    mine = {_esp_key(t) for t in ours}
    for t in theirs:
        if _esp_key(t) in mine:
            try:
                esp_choice(t)
            except ProposalError:
                continue
            return t
    return None
