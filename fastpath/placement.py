"""Which engine executes an SA: a pure function of the SA and the capability tables.

Order of preference (fastest and least CPU first): inline protocol > inline
crypto > lookaside protocol > lookaside crypto (cryptodev) > CPU crypto > the
software batch engines.  An engine is eligible only if its capabilities cover
the SA: algorithm and key/ICV/IV/AAD sizes, ESN, UDP encapsulation, IPv6,
replay window, and (where the device writes the outer header) the SA's header
policies.  AH is placed on the software engines only: no NIC or rte_security driver here offloads AH
and the cryptodev paths are built for ESP, so every DPDK kind says so per SA.  ``place`` returns the
chosen engine, the eligible ones behind it
(the fall-back order when session creation fails) and, for every engine not
taken, the reason.  No I/O, no DPDK: tests feed it tables for hardware we do
not have.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath.dpdk.caps import CryptodevCaps, DpdkCaps, EthdevCaps, SecurityCap, SymCap


class EngineKind(enum.StrEnum):
    INLINE_PROTOCOL = "inline-protocol"
    INLINE_CRYPTO = "inline-crypto"
    LOOKASIDE_PROTOCOL = "lookaside-protocol"
    LOOKASIDE_CRYPTO = "lookaside-crypto"
    CPU_CRYPTO = "cpu-crypto"
    SOFTWARE = "software"


ORDER: tuple[EngineKind, ...] = tuple(EngineKind)


@dataclass(frozen=True)
class SoftwareEngine:
    """A software batch engine (fastpath.engines), the ESP algorithm names it serves and its AH ones."""

    name: str
    algorithms: frozenset[str]
    ah_algorithms: frozenset[str] = frozenset()


ALL_ALGORITHMS = frozenset(ENC_ALGS) | frozenset(INTEG_ALGS)
DEFAULT_SOFTWARE = (SoftwareEngine("software", ALL_ALGORITHMS, frozenset(AH_INTEG_ALGS)),)
AH_NOT_OFFLOADED = "AH is not offloaded: no NIC or rte_security driver here offers it, and the cryptodev " \
    "paths carry ESP only (AH runs in a software engine)"


def present_software() -> tuple[SoftwareEngine, ...]:
    """The software batch engines present on this machine, fastest first, with what each serves."""
    from fastpath.engines import discover

    return tuple(SoftwareEngine(i.name, frozenset(i.algorithms), frozenset(i.ah_algorithms))
                 for i in discover() if i.present)


@dataclass(frozen=True)
class Candidate:
    kind: EngineKind
    device: str             # port/cryptodev name, software engine name, or "-" when no device offers the kind
    driver: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.device}"


@dataclass(frozen=True)
class Placement:
    """Result of ``place``: ``engine`` is None only when nothing at all can run the SA."""

    spi: int
    direction: Direction
    eligible: tuple[Candidate, ...]
    skipped: tuple[tuple[Candidate, str], ...] = field(default=())

    @property
    def engine(self) -> Candidate | None:
        return self.eligible[0] if self.eligible else None

    def fall_back(self, reason: str) -> Placement:
        """The placement after the chosen engine failed (e.g. session creation): next eligible one."""
        if not self.eligible:
            return self
        first, rest = self.eligible[0], self.eligible[1:]
        return replace(self, eligible=rest, skipped=(*self.skipped, (first, reason)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "spi": self.spi,
            "direction": str(self.direction),
            "engine": str(self.engine) if self.engine else None,
            "fallbacks": [str(c) for c in self.eligible[1:]],
            "skipped": [{"engine": str(c), "reason": r} for c, r in self.skipped],
        }


# ---- what the SA needs from a crypto device, in DPDK's algorithm vocabulary

@dataclass(frozen=True)
class Need:
    xform: str              # aead | cipher | auth
    algo: str               # DPDK name
    key: int
    digest: int | None = None
    aad: int | None = None
    iv: int | None = None

    def __str__(self) -> str:
        parts = [f"key {self.key}"]
        if self.digest is not None:
            parts.append(f"digest {self.digest}")
        if self.aad is not None:
            parts.append(f"aad {self.aad}")
        if self.iv is not None:
            parts.append(f"iv {self.iv}")
        return f"{self.algo} ({', '.join(parts)})"


_HMAC = {"hmac-sha256-128": "sha2-256-hmac", "hmac-sha384-192": "sha2-384-hmac", "hmac-sha512-256": "sha2-512-hmac"}


def crypto_needs(sa: SA) -> tuple[Need, ...]:
    """The symmetric transforms a device must offer to run this SA (nonce = salt || IV: 12 bytes)."""
    alg = sa.enc_alg
    aad = 12 if sa.esn else 8
    if alg.name.startswith("aes-gcm-"):
        return (Need("aead", "aes-gcm", alg.key_len, alg.icv_len, aad, 12),)
    if alg.name == "chacha20-poly1305":
        return (Need("aead", "chacha20-poly1305", alg.key_len, alg.icv_len, aad, 12),)
    if alg.name.startswith("aes-gmac-"):
        return (Need("auth", "aes-gmac", alg.key_len, alg.icv_len, None, 12),)
    integ = sa.integ_alg
    assert integ is not None  # SA.validate: non-AEAD ciphers come with an integrity algorithm
    auth = Need("auth", _HMAC[integ.name], integ.key_len, integ.icv_len)
    if alg.name.startswith("aes-cbc-"):
        return (Need("cipher", "aes-cbc", alg.key_len, iv=16), auth)
    return (Need("cipher", "null", 0, iv=0), auth)


def _covers(sym: SymCap, need: Need) -> bool:
    if sym.xform != need.xform or sym.algo != need.algo or need.key not in sym.key:
        return False
    if need.digest is not None and need.digest not in sym.digest:
        return False
    if need.aad is not None and need.aad not in sym.aad:
        return False
    return need.iv is None or need.iv in sym.iv


def missing_crypto(sa: SA, syms: Iterable[SymCap]) -> str | None:
    """None when ``syms`` cover every transform the SA needs, else what is missing."""
    syms = tuple(syms)
    for need in crypto_needs(sa):
        if not any(_covers(s, need) for s in syms):
            same = [s for s in syms if s.xform == need.xform and s.algo == need.algo]
            if not same:
                return f"{sa.enc if need.xform != 'auth' or not sa.integ else sa.integ}: no {need.algo}"
            offered = "; ".join(f"key {s.key}, digest {s.digest}, aad {s.aad}, iv {s.iv}" for s in same)
            return f"{sa.enc}{'+' + sa.integ if sa.integ else ''}: needs {need}, device offers {offered}"
    return None


# ---- rte_security capabilities

_HEADER_OPTIONS = "copy_dscp", "copy_df", "ecn", "copy_flabel"


def _security_reason(sa: SA, direction: Direction, caps: Sequence[SecurityCap], action: str,
                     protocol_offload: bool) -> tuple[SecurityCap | None, str]:
    """The first capability of ``action`` that covers the SA, or why none does.

    Filters step by step so the reason names the first property no capability
    of the device has.
    """
    sec_dir = "egress" if direction == Direction.OUT else "ingress"
    steps: list[tuple[str, Callable[[SecurityCap], bool]]] = [
        ("IPsec ESP", lambda c: c.protocol == "ipsec" and c.ipsec_proto == "esp"),
        (f"{sec_dir} direction", lambda c: c.direction == sec_dir),
        (f"{sa.mode} mode", lambda c: c.mode == str(sa.mode)),
    ]
    steps.append(("", lambda c: missing_crypto(sa, c.crypto) is None))
    if sa.esn:
        steps.append(("ESN", lambda c: "esn" in c.options))
    if sa.udp_encap:
        steps.append(("UDP encapsulation", lambda c: "udp_encap" in c.options))
    if sa.dst.version == 6:
        steps.append(("IPv6", lambda c: c.ipv6))
    if protocol_offload:
        # The device keeps the replay window and writes the outer header.
        if direction == Direction.IN and sa.replay_window:
            steps.append((f"a replay window of {sa.replay_window}",
                          lambda c: c.replay_win_max >= sa.replay_window))
        if sa.mode == "tunnel" and direction == Direction.OUT:
            if sa.dscp is None:
                steps.append(("DSCP copy", lambda c: "copy_dscp" in c.options))
            if sa.df == "copy" and sa.dst.version == 4:
                steps.append(("DF copy", lambda c: "copy_df" in c.options))
            if sa.ecn == "normal":
                steps.append(("ECN copy (RFC 6040)", lambda c: "ecn" in c.options))
            if sa.flowlabel == "copy" and sa.dst.version == 6:
                steps.append(("flow label copy", lambda c: "copy_flabel" in c.options))
    pool = [c for c in caps if c.action == action]
    if not pool:
        return None, f"no {action} capability"
    for what, keep in steps:
        kept = [c for c in pool if keep(c)]
        if not kept:
            if not what:   # the algorithm step: report the closest capability's gap
                return None, missing_crypto(sa, (s for c in pool for s in c.crypto)) or \
                    "algorithm not offered in one capability with these properties"
            if what.startswith("a replay window"):
                best = max(c.replay_win_max for c in pool)
                return None, f"{what} exceeds the device maximum {best}"
            return None, f"no {what} support"
        pool = kept
    return pool[0], ""


# ---- the candidates of each kind

def _eth_candidates(sa: SA, direction: Direction, ethdevs: Sequence[EthdevCaps], action: str,
                    kind: EngineKind, refused: str = "") -> list[tuple[Candidate, str]]:
    """The ports offering ``action`` and why each cannot take sa ("" when it can); ``refused``: that reason
    for every one, unexamined (an SA no such device takes, e.g. AH)."""
    out = []
    for e in ethdevs:
        if not any(c.action == action for c in e.security):
            continue
        cand = Candidate(kind, e.name, e.driver)
        if refused:
            out.append((cand, refused))
            continue
        if direction == Direction.IN and not e.rx_security:
            out.append((cand, "port lacks the RX security offload"))
            continue
        if direction == Direction.OUT and not e.tx_security:
            out.append((cand, "port lacks the TX security offload"))
            continue
        _, why = _security_reason(sa, direction, e.security, action, kind == EngineKind.INLINE_PROTOCOL)
        out.append((cand, why))
    return out


def _cdev_candidates(sa: SA, direction: Direction, cdevs: Sequence[CryptodevCaps],
                     kind: EngineKind, refused: str = "") -> list[tuple[Candidate, str]]:
    """As _eth_candidates, for the cryptodevs offering ``kind``."""
    out = []
    for d in cdevs:
        cand = Candidate(kind, d.name, d.driver)
        if kind == EngineKind.LOOKASIDE_PROTOCOL:
            if not any(c.action == "lookaside-protocol" for c in d.security):
                continue
            why = refused or _security_reason(sa, direction, d.security, "lookaside-protocol", True)[1]
        else:
            if kind == EngineKind.LOOKASIDE_CRYPTO and not d.symmetric:
                continue
            if kind == EngineKind.CPU_CRYPTO and not d.cpu_crypto:
                continue
            if refused:
                out.append((cand, refused))
                continue
            why = missing_crypto(sa, d.sym) or ""
            if not why and len(crypto_needs(sa)) > 1 and not d.chaining:
                why = "cipher + auth need operation chaining, which the device lacks"
        out.append((cand, why))
    return out


def _software_candidates(sa: SA, software: Sequence[SoftwareEngine]) -> list[tuple[Candidate, str]]:
    out = []
    for s in software:
        cand = Candidate(EngineKind.SOFTWARE, s.name)
        if sa.is_ah:
            out.append((cand, "" if sa.integ in s.ah_algorithms else f"does not implement AH with {sa.integ}"))
            continue
        missing = [a for a in (sa.enc, sa.integ) if a and a not in s.algorithms]
        out.append((cand, f"does not implement {', '.join(missing)}" if missing else ""))
    return out


def place(sa: SA, direction: Direction, caps: DpdkCaps | None = None,
          software: Sequence[SoftwareEngine] = DEFAULT_SOFTWARE, ports: Sequence[str] | None = None) -> Placement:
    """Choose the engine for one SA.

    ``caps`` None means no DPDK (kernel I/O): only software engines.
    ``ports`` restricts the inline kinds to the ethdev ports (by name) this
    SA's traffic leaves or arrives on; None considers every port.
    """
    direction = Direction(direction)
    caps = caps or DpdkCaps()
    ethdevs = [e for e in caps.ethdevs if ports is None or e.name in ports]
    eligible: list[Candidate] = []
    skipped: list[tuple[Candidate, str]] = []
    # AH is refused by every device rung, named per device that offers the kind (list-sas shows those)
    refused = AH_NOT_OFFLOADED if sa.is_ah else ""
    for kind in ORDER:
        if kind == EngineKind.INLINE_PROTOCOL:
            found = _eth_candidates(sa, direction, ethdevs, "inline-protocol", kind, refused)
        elif kind == EngineKind.INLINE_CRYPTO:
            found = _eth_candidates(sa, direction, ethdevs, "inline-crypto", kind, refused)
        elif kind == EngineKind.SOFTWARE:
            found = _software_candidates(sa, software)
        else:
            found = _cdev_candidates(sa, direction, caps.cryptodevs, kind, refused)
        if not found and refused:
            found = [(Candidate(kind, "-"), refused)]
        if not found:
            skipped.append((Candidate(kind, "-"), f"no device offers {kind}"))
        for cand, why in found:
            if why:
                skipped.append((cand, why))
            else:
                eligible.append(cand)
    return Placement(sa.spi, direction, tuple(eligible), tuple(skipped))


def esp_algorithms(syms: Iterable[SymCap], chaining: bool = True) -> list[str]:
    """Our ESP algorithm names (encryption and integrity) a set of symmetric capabilities can run, for display."""
    import ipaddress

    syms = tuple(syms)
    addr = ipaddress.ip_address("192.0.2.1")

    def runs(enc: str, integ: str | None) -> bool:
        alg = ENC_ALGS[enc]
        sa = SA(spi=0x1000, src=addr, dst=addr, enc=enc, enc_key=bytes(alg.config_key_len), integ=integ,
                integ_key=bytes(INTEG_ALGS[integ].key_len) if integ else b"")
        return missing_crypto(sa, syms) is None and (integ is None or chaining)

    out = [n for n, a in ENC_ALGS.items() if a.aead and runs(n, None)]
    out += [n for n, a in ENC_ALGS.items() if not a.aead and any(runs(n, i) for i in INTEG_ALGS)]
    out += [i for i in INTEG_ALGS if any(runs(n, i) for n, a in ENC_ALGS.items() if not a.aead)]
    return out
