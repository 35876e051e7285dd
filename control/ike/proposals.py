"""Proposals written with strongSwan's keywords, their transforms, and proposal selection.

``parse_proposals("aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384", "ike")``
gives the transforms an SA payload carries, so operators can copy what they run
in swanctl.conf.  Rules follow strongSwan's: algorithms of one type listed in
one proposal are alternatives; an IKE proposal without a ``prf`` keyword takes
its PRFs from the integrity keywords; an AEAD IKE proposal's integrity keywords
only name PRFs; ESP and AH proposals get "no ESN" unless ``esn`` is written.  An AH proposal
(protocol ID 2, RFC 7296 §3.3) has integrity, ESN and optional key exchange transforms but no cipher;
its ``aes128gmac``... keywords name AES-GMAC as integrity (RFC 4543 §7: AUTH_AES_*_GMAC).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cdefs.algorithms import AH_INTEG_ALGS
from control.ike.constants import ADDKE_TYPES, DhGroup, Encr, Esn, Integ, Prf, ProtocolId, TransformType
from control.ike.crypto import ENCR, INTEG, MLKEM_GROUPS, SUPPORTED_GROUPS, IkeSuite, encr_key_len
from control.ike.sa_payload import Proposal, Transform


class ProposalError(ValueError):
    """A proposal string that does not parse; the message names the keyword."""


_INTEG_KW = {
    "sha1": Integ.HMAC_SHA1_96, "sha": Integ.HMAC_SHA1_96,
    "sha256": Integ.HMAC_SHA2_256_128, "sha2_256": Integ.HMAC_SHA2_256_128,
    "sha384": Integ.HMAC_SHA2_384_192, "sha2_384": Integ.HMAC_SHA2_384_192,
    "sha512": Integ.HMAC_SHA2_512_256, "sha2_512": Integ.HMAC_SHA2_512_256,
}
_INTEG_TO_PRF = {
    Integ.HMAC_SHA1_96: Prf.HMAC_SHA1, Integ.HMAC_SHA2_256_128: Prf.HMAC_SHA2_256,
    Integ.HMAC_SHA2_384_192: Prf.HMAC_SHA2_384, Integ.HMAC_SHA2_512_256: Prf.HMAC_SHA2_512,
}
_PRF_KW = {"prfsha1": Prf.HMAC_SHA1, "prfsha256": Prf.HMAC_SHA2_256, "prfsha384": Prf.HMAC_SHA2_384,
           "prfsha512": Prf.HMAC_SHA2_512}
_DH_KW = {
    "modp2048": DhGroup.MODP_2048, "ecp256": DhGroup.ECP_256, "ecp384": DhGroup.ECP_384, "ecp521": DhGroup.ECP_521,
    "curve25519": DhGroup.CURVE25519, "x25519": DhGroup.CURVE25519,
    "curve448": DhGroup.CURVE448, "x448": DhGroup.CURVE448,
    "mlkem512": DhGroup.MLKEM512, "mlkem768": DhGroup.MLKEM768, "mlkem1024": DhGroup.MLKEM1024,
}
# RFC 9370 additional key exchanges in strongSwan 6's spelling: ke1_mlkem768 ... ke7_x25519, and
# keN_none to make that additional exchange optional
_ADDKE_RE = re.compile(r"^ke([1-7])_([a-z0-9]+)$")
_GCM_ICV = {"8": Encr.AES_GCM_8, "64": Encr.AES_GCM_8, "12": Encr.AES_GCM_12, "96": Encr.AES_GCM_12,
            "16": Encr.AES_GCM_16, "128": Encr.AES_GCM_16}
_AES_RE = re.compile(r"^aes(128|192|256)?(?:gcm(8|12|16|64|96|128))?$")
_GMAC_RE = re.compile(r"^aes(128|192|256)gmac$")


def _encr_keyword(kw: str) -> tuple[int, int | None] | None:
    if kw in ("chacha20poly1305", "chacha20poly1305compat"):
        return Encr.CHACHA20_POLY1305, None
    m = _AES_RE.match(kw)
    if m:
        bits = int(m.group(1) or 128)
        return (_GCM_ICV[m.group(2)] if m.group(2) else Encr.AES_CBC), bits
    m = _GMAC_RE.match(kw)
    if m:
        return Encr.NULL_AUTH_AES_GMAC, int(m.group(1))
    return None


def _group(kw: str, name: str) -> int:
    """The key exchange method a keyword names, refusing one this build cannot compute."""
    group = _DH_KW[name]
    if group not in SUPPORTED_GROUPS:
        raise ProposalError(f"{kw}: {DhGroup(group).name} is not available (the installed cryptography "
                            f"offers ML-KEM {', '.join(DhGroup(g).name[5:] for g in MLKEM_GROUPS)})")
    return group


_AH_GMAC_KW = {"aes128gmac": Integ.AES_128_GMAC, "aes192gmac": Integ.AES_192_GMAC, "aes256gmac": Integ.AES_256_GMAC}


def _parse_ah(text: str) -> Proposal:
    """An AH proposal ("sha256-esn", "aes256gmac-x25519"): integrity, optional DH for PFS, ESN."""
    integ: list[int] = []
    dh: list[int] = []
    esn: list[int] = []
    for kw in text.strip().lower().split("-"):
        if kw in _INTEG_KW:
            integ.append(_INTEG_KW[kw])
        elif kw in _AH_GMAC_KW:
            integ.append(_AH_GMAC_KW[kw])
        elif kw in _DH_KW:
            dh.append(_DH_KW[kw])
        elif kw in ("esn", "noesn"):
            esn.append(Esn.YES if kw == "esn" else Esn.NO)
        elif _encr_keyword(kw) is not None:
            raise ProposalError(f"{kw}: AH authenticates only, an AH proposal takes no cipher")
        else:
            raise ProposalError(f"unknown or unsupported ah proposal keyword {kw!r} in {text!r}")
    if not integ:
        raise ProposalError(f"{text!r}: an AH proposal needs an integrity algorithm")
    ts = [Transform(TransformType.INTEG, i) for i in _unique(integ)]
    ts += [Transform(TransformType.DH, d) for d in _unique(dh)]
    ts += [Transform(TransformType.ESN, e) for e in _unique(esn or [Esn.NO])]
    return Proposal(1, ProtocolId.AH, b"", ts)


def parse_proposal(text: str, protocol: str = "ike") -> Proposal:
    """One proposal ("aes128gcm16-prfsha256-x25519") as the transforms of an SA payload proposal."""
    if protocol not in ("ike", "esp", "ah"):
        raise ProposalError(f"protocol {protocol!r}: expected ike, esp or ah")
    if protocol == "ah":
        return _parse_ah(text)
    encr: list[Transform] = []
    integ: list[int] = []
    prfs: list[int] = []
    dh: list[int] = []
    esn: list[int] = []
    addke: dict[int, list[int]] = {}
    for kw in text.strip().lower().split("-"):
        e = _encr_keyword(kw)
        m = _ADDKE_RE.match(kw)
        if e is not None:
            if protocol == "ike" and e[0] == Encr.NULL_AUTH_AES_GMAC:
                raise ProposalError(f"{kw}: AES-GMAC only protects ESP, not IKE")
            encr.append(Transform(TransformType.ENCR, e[0], e[1]))
        elif kw in _INTEG_KW:
            integ.append(_INTEG_KW[kw])
        elif kw in _PRF_KW:
            if protocol == "esp":
                raise ProposalError(f"{kw}: a PRF has no place in an ESP proposal")
            prfs.append(_PRF_KW[kw])
        elif kw in _DH_KW:
            if protocol == "esp" and _DH_KW[kw] in MLKEM_GROUPS:
                raise ProposalError(f"{kw}: ML-KEM for CHILD SA PFS is not supported yet")
            dh.append(_group(kw, kw))
        elif m is not None:
            if protocol != "ike":
                raise ProposalError(f"{kw}: additional key exchanges for CHILD SAs (IKE_FOLLOWUP_KE) are "
                                    "not supported yet; only IKE proposals take ke1_..ke7_")
            if m.group(2) != "none" and m.group(2) not in _DH_KW:
                raise ProposalError(f"{kw}: unknown key exchange method {m.group(2)!r} "
                                    f"(expected one of {', '.join(sorted(_DH_KW))} or none)")
            ttype = TransformType.ADDKE1 + int(m.group(1)) - 1
            addke.setdefault(ttype, []).append(0 if m.group(2) == "none" else _group(kw, m.group(2)))
        elif kw in ("esn", "noesn") and protocol == "esp":
            esn.append(Esn.YES if kw == "esn" else Esn.NO)
        else:
            raise ProposalError(f"unknown or unsupported {protocol} proposal keyword {kw!r} in {text!r}")
    if not encr:
        raise ProposalError(f"{text!r}: no encryption algorithm")
    aead = [ENCR[t.id].aead if t.id in ENCR else True for t in encr]
    if any(aead) and not all(aead):
        raise ProposalError(f"{text!r}: AEAD and non-AEAD algorithms cannot share one proposal")
    is_aead = aead[0]
    ts: list[Transform] = list(encr)
    if protocol == "ike":
        if not prfs:
            prfs = [_INTEG_TO_PRF[i] for i in integ]
        if not prfs:
            raise ProposalError(f"{text!r}: an IKE proposal needs a PRF (prfsha256...) or an integrity algorithm")
        if is_aead:
            integ = []          # with an AEAD the integrity keywords only named PRFs
        elif not integ:
            raise ProposalError(f"{text!r}: a non-AEAD cipher needs an integrity algorithm")
        if not dh:
            raise ProposalError(f"{text!r}: an IKE proposal needs a key exchange group")
        ts += [Transform(TransformType.PRF, p) for p in _unique(prfs)]
        ts += [Transform(TransformType.INTEG, i) for i in _unique(integ)]
        ts += [Transform(TransformType.DH, d) for d in _unique(dh)]
        for ttype in sorted(addke):
            ts += [Transform(ttype, g) for g in _unique(addke[ttype])]
        return Proposal(1, ProtocolId.IKE, b"", ts)
    if is_aead and integ:
        raise ProposalError(f"{text!r}: an AEAD ESP proposal takes no integrity algorithm")
    if not is_aead and not integ:
        raise ProposalError(f"{text!r}: a non-AEAD cipher needs an integrity algorithm")
    ts += [Transform(TransformType.INTEG, i) for i in _unique(integ)]
    ts += [Transform(TransformType.DH, d) for d in _unique(dh)]
    ts += [Transform(TransformType.ESN, e) for e in _unique(esn or [Esn.NO])]
    return Proposal(1, ProtocolId.ESP, b"", ts)


def _unique(xs: list[int]) -> list[int]:
    return list(dict.fromkeys(xs))


def parse_proposals(text: str, protocol: str = "ike") -> list[Proposal]:
    """Comma-separated proposals, numbered 1, 2, ... in order of preference."""
    out = []
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        prop = parse_proposal(part, protocol)
        prop.num = i + 1
        out.append(prop)
    if not out:
        raise ProposalError("no proposal given")
    return out


# -- selection ---------------------------------------------------------------------------

# Selection and the suites are pure functions of the transforms, and a responder sees the same few
# offers over and over: they are memoised on a hashable signature of the transforms (proposal numbers
# and SPIs, which differ per request, stay out of it and are put back into each fresh result).
_DH, _ESN = int(TransformType.DH), int(TransformType.ESN)     # enum class attributes are slow to read
_TSig = tuple[int, int, "int | None", tuple[tuple[int, bytes], ...]]
_PSig = tuple[int, tuple[_TSig, ...]]


def _tsig(t: Transform) -> _TSig:
    return (t.type, t.id, t.key_length, tuple(t.other_attrs))


def _psig(p: Proposal) -> _PSig:
    return (p.protocol, tuple([(t.type, t.id, t.key_length, tuple(t.other_attrs)) for t in p.transforms]))


def _same(a: _TSig, b: _TSig) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and not b[3]


_ADDKE = frozenset(ADDKE_TYPES)


def _types(p: _PSig, strip_dh: bool) -> set[int]:
    # additional key exchanges are matched on their own (_addke_choice); IKE_AUTH's CHILD SA has none
    types = {t[0] for t in p[1]} - _ADDKE
    if strip_dh:
        types.discard(_DH)
    return types


def _addke_choice(mine: _PSig, peer: _PSig) -> list[tuple[int, int, None]] | None:
    """RFC 9370 §2.2.1: per Additional Key Exchange type, our first method the peer also offers, a type
    absent from a proposal counting as NONE (so ``ke1_none`` accepts a peer without ADDKE1).  The chosen
    NONE is kept only where the peer wrote the type; None when a type has no common method."""
    out: list[tuple[int, int, None]] = []
    for ttype in sorted({t[0] for t in mine[1] if t[0] in _ADDKE} | {t[0] for t in peer[1] if t[0] in _ADDKE}):
        ours = [t[1] for t in mine[1] if t[0] == ttype] or [0]
        theirs = [t[1] for t in peer[1] if t[0] == ttype]
        pick = next((g for g in ours if g in (theirs or [0])), None)
        if pick is None:
            return None
        if pick or theirs:
            out.append((ttype, pick, None))
    return out


@functools.lru_cache(maxsize=1024)
def _select(ours: tuple[_PSig, ...], theirs: tuple[_PSig, ...], strip_dh: bool
            ) -> tuple[int, tuple[tuple[int, int, int | None], ...]] | None:
    """(index of the peer's proposal, chosen (type, id, key length) per type) or None."""
    for index, peer in enumerate(theirs):
        # an INTEG of NONE or a DH of NONE counts as absent
        peer_types = {tt for tt in _types(peer, strip_dh)
                      if any(t[1] for t in peer[1] if t[0] == tt) or tt == _ESN}
        for mine in ours:
            if peer[0] != mine[0] or peer_types != _types(mine, strip_dh):
                continue
            chosen = []
            for ttype in sorted(peer_types):
                match = next((p for m in mine[1] if m[0] == ttype for p in peer[1] if p[0] == ttype and _same(m, p)),
                             None)
                if match is None:
                    break
                chosen.append((match[0], match[1], match[2]))
            else:
                extra = [] if strip_dh else _addke_choice(mine, peer)
                if extra is not None:
                    return index, tuple(chosen + extra)
    return None


def select_proposal(ours: list[Proposal], theirs: list[Proposal], *, strip_dh: bool = False) -> Proposal | None:
    """The first of the peer's proposals that one of ours accepts, reduced to one transform per type.

    The result keeps the peer's proposal number and SPI (RFC 7296 §3.3.1).  With
    ``strip_dh`` (the first CHILD SA, created in IKE_AUTH) key exchange transforms
    are ignored on both sides: that exchange has no KE payload.  It is a new object
    each time: callers may set its SPI.
    """
    found = _select(tuple([_psig(p) for p in ours]), tuple([_psig(p) for p in theirs]), strip_dh)
    if found is None:
        return None
    peer = theirs[found[0]]
    return Proposal(peer.num, peer.protocol, peer.spi, [Transform(t, i, k) for t, i, k in found[1]])


def with_group(proposals: list[Proposal], group: int) -> list[Proposal]:
    """The proposals with every key exchange transform but group removed: what the peer's KE
    payload (of group) already works with, so selection can prefer it over a retry.  When no other
    group is offered (the usual offer) that is the list itself, not a copy: callers only read it."""
    if all(t.type != _DH or t.id == group for p in proposals for t in p.transforms):
        return proposals
    return [Proposal(p.num, p.protocol, p.spi,
                     [t for t in p.transforms if t.type != _DH or t.id == group])
            for p in proposals]


def proposal_acceptable(ours: list[Proposal], chosen: Proposal, *, strip_dh: bool = False) -> bool:
    """Whether a responder's choice (one transform per type) is one we offered."""
    if len({t.type for t in chosen.transforms}) != len(chosen.transforms):
        return False
    return select_proposal(ours, [chosen], strip_dh=strip_dh) is not None


def without_addke(proposals: list[Proposal]) -> list[Proposal]:
    """The proposals with no additional key exchange: what an IKE SA rekey offers and accepts until
    IKE_FOLLOWUP_KE exists (the new SKEYSEED still mixes in the old SK_d, and with it every key exchange of
    the IKE SA's creation, RFC 7296 §2.18)."""
    if not any(t.type in _ADDKE for p in proposals for t in p.transforms):
        return proposals
    return [Proposal(p.num, p.protocol, p.spi, [t for t in p.transforms if t.type not in _ADDKE]) for p in proposals]


def wants_intermediate(proposals: list[Proposal]) -> bool:
    """Whether any proposal has an additional key exchange other than NONE (RFC 9242 §3.1's notify then)."""
    return any(t.type in _ADDKE and t.id for p in proposals for t in p.transforms)


def first_dh(proposals: list[Proposal]) -> int:
    for p in proposals:
        for t in p.of_type(TransformType.DH):
            return t.id
    raise ProposalError("no key exchange group proposed")


def offered_groups(proposals: list[Proposal]) -> list[int]:
    return _unique([t.id for p in proposals for t in p.of_type(TransformType.DH)])


# -- chosen proposals as algorithms -------------------------------------------------------

def _one(p: Proposal, ttype: int) -> Transform | None:
    ts = p.of_type(ttype)
    return ts[0] if ts else None


def ike_suite(p: Proposal) -> IkeSuite:
    """The IKE SA's algorithms from a chosen proposal; unsupported ones raise ProposalError."""
    return _ike_suite(_psig(p))


@functools.lru_cache(maxsize=256)
def _ike_suite(sig: _PSig) -> IkeSuite:
    p = _from_sig(sig)
    enc, prf_t, dh = _one(p, TransformType.ENCR), _one(p, TransformType.PRF), _one(p, TransformType.DH)
    integ = _one(p, TransformType.INTEG)
    if enc is None or enc.id not in ENCR or prf_t is None or dh is None or dh.id not in SUPPORTED_GROUPS:
        raise ProposalError("chosen IKE proposal lacks a supported cipher, PRF or group")
    info = ENCR[enc.id]
    if (enc.key_length is None) != (not info.key_lengths) or (
            enc.key_length is not None and enc.key_length not in info.key_lengths):
        raise ProposalError("chosen IKE cipher has an unsupported key length")
    integ_id = integ.id if integ else Integ.NONE
    if info.aead != (integ_id == Integ.NONE) or (integ_id and integ_id not in INTEG):
        raise ProposalError("chosen IKE proposal mixes an AEAD with integrity, or lacks integrity")
    addke = []
    for ttype in ADDKE_TYPES:
        ts = p.of_type(ttype)
        if len(ts) > 1:
            raise ProposalError("chosen IKE proposal has more than one method of one additional key exchange")
        if ts and ts[0].id:
            if ts[0].id not in SUPPORTED_GROUPS:
                raise ProposalError(f"chosen additional key exchange method {ts[0].id} is not supported")
            addke.append(ts[0].id)
    return IkeSuite(enc.id, enc.key_length, prf_t.id, integ_id, dh.id, tuple(addke))


@dataclass(frozen=True)
class EspSuite:
    """A chosen ESP (or AH) proposal in cdefs.algorithms names and the key material sizes it needs."""

    enc: str                # cdefs.algorithms.ENC_ALGS key ("null" for AH)
    integ: str | None       # cdefs.algorithms.INTEG_ALGS key (AH: AH_INTEG_ALGS)
    enc_key_len: int        # bytes from KEYMAT, salt included
    integ_key_len: int      # AH's AES-GMAC: the AES key and its 4-byte salt (RFC 4543 §7)
    esn: bool
    proto: str = "esp"      # esp | ah, as cdefs.sa.SA.proto


_FASTPATH_INTEG = {Integ.HMAC_SHA2_256_128: "hmac-sha256-128", Integ.HMAC_SHA2_384_192: "hmac-sha384-192",
                   Integ.HMAC_SHA2_512_256: "hmac-sha512-256"}


def esp_suite(p: Proposal) -> EspSuite:
    """The data plane's names for a chosen ESP proposal; unsupported ones raise ProposalError."""
    return _esp_suite(_psig(p))


def _from_sig(sig: _PSig) -> Proposal:
    return Proposal(1, sig[0], b"", [Transform(t, i, k, list(a)) for t, i, k, a in sig[1]])


@functools.lru_cache(maxsize=256)
def _esp_suite(sig: _PSig) -> EspSuite:
    p = _from_sig(sig)
    enc, integ, esn = _one(p, TransformType.ENCR), _one(p, TransformType.INTEG), _one(p, TransformType.ESN)
    if enc is None:
        raise ProposalError("chosen ESP proposal has no cipher")
    bits = enc.key_length
    if enc.id == Encr.AES_GCM_16 and bits in (128, 192, 256):
        name = f"aes-gcm-{bits}"
    elif enc.id == Encr.NULL_AUTH_AES_GMAC and bits in (128, 192, 256):
        name = f"aes-gmac-{bits}"
    elif enc.id == Encr.CHACHA20_POLY1305 and bits is None:
        name = "chacha20-poly1305"
    elif enc.id == Encr.AES_CBC and bits in (128, 256):
        name = f"aes-cbc-{bits}"
    else:
        raise ProposalError(f"ESP cipher {enc.id} with key length {bits} is not supported by the data plane")
    integ_name = None
    if integ is not None and integ.id != Integ.NONE:
        if integ.id not in _FASTPATH_INTEG:
            raise ProposalError(f"ESP integrity {integ.id} is not supported by the data plane")
        integ_name = _FASTPATH_INTEG[Integ(integ.id)]
    aead = name != f"aes-cbc-{bits}"
    if aead == (integ_name is not None):
        raise ProposalError("chosen ESP proposal mixes an AEAD with integrity, or lacks integrity")
    enc_len = encr_key_len(Encr.AES_GCM_16 if enc.id == Encr.NULL_AUTH_AES_GMAC else enc.id, bits)
    integ_len = INTEG[integ.id].key_len if integ_name else 0  # type: ignore[union-attr]
    return EspSuite(name, integ_name, enc_len, integ_len, bool(esn and esn.id == Esn.YES))


_AH_INTEG = {Integ.HMAC_SHA1_96: "hmac-sha1-96", **_FASTPATH_INTEG,
             Integ.AES_128_GMAC: "aes-gmac-128", Integ.AES_192_GMAC: "aes-gmac-192",
             Integ.AES_256_GMAC: "aes-gmac-256"}


def child_suite(p: Proposal) -> EspSuite:
    """The data plane's names for a chosen ESP or AH proposal (by its protocol ID)."""
    return ah_suite(p) if p.protocol == ProtocolId.AH else esp_suite(p)


def ah_suite(p: Proposal) -> EspSuite:
    """The data plane's names for a chosen AH proposal; unsupported ones raise ProposalError."""
    return _ah_suite(_psig(p))


@functools.lru_cache(maxsize=64)
def _ah_suite(sig: _PSig) -> EspSuite:
    p = _from_sig(sig)
    if p.protocol != ProtocolId.AH:
        raise ProposalError(f"protocol {p.protocol} is not AH")
    if p.of_type(TransformType.ENCR):
        raise ProposalError("chosen AH proposal carries a cipher: AH authenticates only")
    integ, esn = _one(p, TransformType.INTEG), _one(p, TransformType.ESN)
    if integ is None or integ.id not in _AH_INTEG:
        raise ProposalError(f"AH integrity {integ.id if integ else None} is not supported by the data plane")
    if integ.key_length is not None:
        raise ProposalError("AH integrity transforms take no key length attribute")
    name = _AH_INTEG[Integ(integ.id)]
    # AH_INTEG_ALGS' key length includes GMAC's salt, which KEYMAT supplies after the key (RFC 4543 §7)
    return EspSuite("null", name, 0, AH_INTEG_ALGS[name].key_len, bool(esn and esn.id == Esn.YES), "ah")
