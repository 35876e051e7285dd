"""SA placement over capability tables.

Hardware we cannot have here (ixgbe, cnxk, a QAT-like card, a lookaside
protocol accelerator) appears as capability tables written from the drivers'
documented limits.  The software PMDs (aesni_gcm, aesni_mb, openssl) are not
faked: their tables come from real DPDK discovery, once per module.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath.dpdk.caps import CryptodevCaps, DpdkCaps, EthdevCaps, Range, SecurityCap, SymCap
from fastpath.placement import ORDER, EngineKind, SoftwareEngine, crypto_needs, missing_crypto, place

# ---- tables for hardware we cannot have

GCM_128_ONLY = SymCap("aead", "aes-gcm", Range(16, 16), Range(16, 16), Range(8, 12, 4), Range(12, 12))
GMAC_128_ONLY = SymCap("auth", "aes-gmac", Range(16, 16), Range(16, 16), Range(0, 0), Range(12, 12))
FULL_SET = (
    SymCap("aead", "aes-gcm", Range(16, 32, 8), Range(16, 16), Range(8, 12, 4), Range(12, 12)),
    SymCap("aead", "chacha20-poly1305", Range(32, 32), Range(16, 16), Range(8, 12, 4), Range(12, 12)),
    SymCap("auth", "aes-gmac", Range(16, 32, 8), Range(16, 16), Range(0, 0), Range(12, 12)),
    SymCap("cipher", "aes-cbc", Range(16, 32, 8), iv=Range(16, 16), block_size=16),
    SymCap("cipher", "null", Range(0, 0)),
    SymCap("auth", "sha2-256-hmac", Range(1, 1024, 1), Range(16, 16)),
    SymCap("auth", "sha2-384-hmac", Range(1, 1024, 1), Range(24, 24)),
    SymCap("auth", "sha2-512-hmac", Range(1, 1024, 1), Range(32, 32)),
)
ALL_OPTIONS = frozenset({"esn", "udp_encap", "copy_dscp", "copy_df", "copy_flabel", "ecn", "stats", "dec_ttl"})


def sec_caps(action: str, crypto: tuple[SymCap, ...], options: frozenset[str] = frozenset(),
             replay: int = 0, ipv6: bool = True) -> tuple[SecurityCap, ...]:
    return tuple(SecurityCap(action, "ipsec", "esp", mode, direction, options, replay if direction == "ingress"
                             else 0, crypto, ipv6)
                 for mode in ("tunnel", "transport") for direction in ("egress", "ingress"))


# 82599: inline crypto, AES-128-GCM (and GMAC) only, no ESN, no ESP-in-UDP.
IXGBE = EthdevCaps(0, "0000:01:00.0", "net_ixgbe", True, True,
                   sec_caps("inline-crypto", (GCM_128_ONLY, GMAC_128_ONLY)), 128, 128)
# cn10k: inline protocol with everything, a 4096-packet replay window.
CNXK = EthdevCaps(1, "0002:02:00.0", "net_cnxk", True, True,
                  sec_caps("inline-protocol", FULL_SET, ALL_OPTIONS, 4096), 64, 64)
# QAT-like lookaside crypto: no rte_security IPsec, no CPU crypto, a 96-bit-IV GCM, chaining.
QAT = CryptodevCaps(2, "0000:3d:00.0_qat_sym", "crypto_qat",
                    frozenset({"SYMMETRIC_CRYPTO", "SYM_OPERATION_CHAINING", "HW_ACCELERATED"}),
                    FULL_SET, (), 16, 0)
# A lookaside protocol accelerator (dpaa2_sec-like), ESN but no UDP encapsulation.
LA_PROTO = CryptodevCaps(3, "dpsec-0", "crypto_dpaa2_sec",
                         frozenset({"SYMMETRIC_CRYPTO", "SYM_OPERATION_CHAINING", "SECURITY_PROTOCOL"}),
                         FULL_SET,
                         sec_caps("lookaside-protocol", FULL_SET,
                                  frozenset({"esn", "copy_dscp", "copy_df", "copy_flabel", "ecn"}), 1024),
                         8, 2048)


@pytest.fixture(scope="module")
def soft_devs() -> tuple[CryptodevCaps, ...]:
    """aesni_gcm, aesni_mb and openssl as DPDK really describes them."""
    from fastpath.dpdk.eal import availability

    ok, why = availability()
    if not ok:
        pytest.skip(why)
    from fastpath.dpdk.caps import discover_in_subprocess

    found = discover_in_subprocess(["crypto_aesni_gcm0", "crypto_aesni_mb0", "crypto_openssl0"])
    return found.cryptodevs


def tables(*, eth=(), cdev=()) -> DpdkCaps:
    return DpdkCaps("test", (), tuple(eth), tuple(cdev))


A4, B4 = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("198.51.100.1")
A6, B6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2")


def make_sa(enc: str = "aes-gcm-128", integ: str | None = None, *, v6: bool = False, **kw) -> SA:
    alg = ENC_ALGS[enc]
    return SA(spi=0x1000, src=A6 if v6 else A4, dst=B6 if v6 else B4, enc=enc, enc_key=bytes(alg.config_key_len),
              integ=integ, integ_key=bytes(INTEG_ALGS[integ].key_len) if integ else b"", **kw)


def reasons(p) -> dict[str, str]:
    return {str(c): r for c, r in p.skipped}


# ---- the ladder

def test_everything_present_prefers_inline_protocol(soft_devs):
    caps = tables(eth=[IXGBE, CNXK], cdev=[LA_PROTO, QAT, *soft_devs])
    p = place(make_sa(), "out", caps)
    assert str(p.engine) == "inline-protocol:0002:02:00.0"
    kinds = [c.kind for c in p.eligible]
    assert kinds == sorted(kinds, key=ORDER.index), "fall-back order follows the preference order"
    assert set(kinds) == set(EngineKind)
    assert kinds[-1] == EngineKind.SOFTWARE


def test_ixgbe_inline_crypto_takes_aes_gcm_128_only(soft_devs):
    caps = tables(eth=[IXGBE], cdev=soft_devs)
    assert str(place(make_sa(), "in", caps).engine) == "inline-crypto:0000:01:00.0"
    assert str(place(make_sa("aes-gmac-128"), "out", caps).engine) == "inline-crypto:0000:01:00.0"
    p = place(make_sa("aes-gcm-256"), "out", caps)
    assert str(p.engine) == "lookaside-crypto:crypto_aesni_gcm0"
    assert "key 32" in reasons(p)["inline-crypto:0000:01:00.0"]
    assert "offers key 16" in reasons(p)["inline-crypto:0000:01:00.0"]


@pytest.mark.parametrize("kw, why", [
    ({"esn": True}, "no ESN support"),
    ({"udp_encap": True}, "no UDP encapsulation support"),
])
def test_ixgbe_restrictions(kw, why, soft_devs):
    p = place(make_sa(**kw), "out", tables(eth=[IXGBE], cdev=soft_devs))
    assert reasons(p)["inline-crypto:0000:01:00.0"] == why
    assert p.engine.kind == EngineKind.LOOKASIDE_CRYPTO


def test_inline_crypto_leaves_replay_and_headers_to_software():
    # Inline crypto only encrypts: a large window and header policies do not matter.
    p = place(make_sa(replay_window=4096, dscp=None, ecn="normal"), "in", tables(eth=[IXGBE]))
    assert p.engine.kind == EngineKind.INLINE_CRYPTO


def test_port_without_security_offload_flag():
    port = EthdevCaps(0, "p0", "net_ixgbe", rx_security=False, tx_security=True, security=IXGBE.security)
    assert place(make_sa(), "out", tables(eth=[port])).engine.kind == EngineKind.INLINE_CRYPTO
    p = place(make_sa(), "in", tables(eth=[port]))
    assert reasons(p)["inline-crypto:p0"] == "port lacks the RX security offload"


def test_ports_filter_restricts_inline_engines():
    caps = tables(eth=[IXGBE, CNXK])
    assert str(place(make_sa(), "out", caps, ports=["0000:01:00.0"]).engine) == "inline-crypto:0000:01:00.0"
    p = place(make_sa(), "out", caps, ports=["elsewhere"])
    assert p.engine.kind == EngineKind.SOFTWARE
    assert reasons(p)["inline-protocol:-"] == "no device offers inline-protocol"


def test_cnxk_inline_protocol_with_esn_udp_ipv6():
    sa = make_sa("aes-gcm-256", esn=True, udp_encap=True, v6=True, replay_window=1024)
    for d in ("in", "out"):
        assert str(place(sa, d, tables(eth=[CNXK])).engine) == "inline-protocol:0002:02:00.0"
    cbc = make_sa("aes-cbc-256", "hmac-sha512-256", mode="transport")
    assert place(cbc, "in", tables(eth=[CNXK])).engine.kind == EngineKind.INLINE_PROTOCOL


def test_protocol_offload_replay_window_limit():
    small = EthdevCaps(1, "cnxk-small", "net_cnxk", True, True,
                       sec_caps("inline-protocol", FULL_SET, ALL_OPTIONS, replay=128))
    p = place(make_sa(replay_window=1024), "in", tables(eth=[small]))
    assert reasons(p)["inline-protocol:cnxk-small"] == "a replay window of 1024 exceeds the device maximum 128"
    assert place(make_sa(replay_window=1024), "out", tables(eth=[small])).engine.kind == EngineKind.INLINE_PROTOCOL
    assert place(make_sa(replay_window=0), "in", tables(eth=[small])).engine.kind == EngineKind.INLINE_PROTOCOL


def test_protocol_offload_must_honour_outer_header_policies():
    bare = EthdevCaps(1, "bare", "net_x", True, True, sec_caps("inline-protocol", FULL_SET, frozenset({"esn"}), 64))
    p = place(make_sa(), "out", tables(eth=[bare]))
    assert reasons(p)["inline-protocol:bare"] == "no DSCP copy support"
    fixed = make_sa(dscp=0, df="set", ecn="compat")
    assert place(fixed, "out", tables(eth=[bare])).engine.kind == EngineKind.INLINE_PROTOCOL
    # Inbound the device writes no outer header.
    assert place(make_sa(), "in", tables(eth=[bare])).engine.kind == EngineKind.INLINE_PROTOCOL


def test_ipv6_unsupported_device():
    v4only = EthdevCaps(0, "v4only", "net_x", True, True, sec_caps("inline-crypto", FULL_SET, ALL_OPTIONS, ipv6=False))
    assert reasons(place(make_sa(v6=True), "out", tables(eth=[v4only])))["inline-crypto:v4only"] == "no IPv6 support"
    assert place(make_sa(), "out", tables(eth=[v4only])).engine.kind == EngineKind.INLINE_CRYPTO


def test_direction_and_mode_coverage():
    egress_tunnel = EthdevCaps(0, "half", "net_x", True, True,
                               (SecurityCap("inline-crypto", "ipsec", "esp", "tunnel", "egress", crypto=FULL_SET),))
    assert reasons(place(make_sa(), "in", tables(eth=[egress_tunnel])))["inline-crypto:half"] == \
        "no ingress direction support"
    assert reasons(place(make_sa(mode="transport"), "out", tables(eth=[egress_tunnel])))["inline-crypto:half"] == \
        "no transport mode support"


def test_lookaside_protocol_rung():
    caps = tables(cdev=[LA_PROTO, QAT])
    p = place(make_sa(esn=True), "in", caps)
    assert str(p.engine) == "lookaside-protocol:dpsec-0"
    p = place(make_sa(udp_encap=True), "out", caps)
    assert reasons(p)["lookaside-protocol:dpsec-0"] == "no UDP encapsulation support"
    assert str(p.engine) == "lookaside-crypto:dpsec-0"   # the same device as a plain cryptodev


def test_qat_like_lookaside_crypto_and_chaining():
    sa = make_sa("aes-cbc-128", "hmac-sha256-128")
    assert str(place(sa, "out", tables(cdev=[QAT])).engine) == "lookaside-crypto:0000:3d:00.0_qat_sym"
    unchained = CryptodevCaps(2, "qat-nochain", "crypto_qat", frozenset({"SYMMETRIC_CRYPTO"}), FULL_SET)
    p = place(sa, "out", tables(cdev=[unchained]))
    assert "chaining" in reasons(p)["lookaside-crypto:qat-nochain"]
    assert place(make_sa(), "out", tables(cdev=[unchained])).engine.kind == EngineKind.LOOKASIDE_CRYPTO
    assert reasons(p)["cpu-crypto:-"] == "no device offers cpu-crypto"


def test_software_pmds_from_real_discovery(soft_devs):
    caps = tables(cdev=soft_devs)
    p = place(make_sa("aes-gcm-256"), "out", caps)
    assert [str(c) for c in p.eligible] == [
        "lookaside-crypto:crypto_aesni_gcm0", "lookaside-crypto:crypto_aesni_mb0",
        "lookaside-crypto:crypto_openssl0", "cpu-crypto:crypto_aesni_gcm0", "cpu-crypto:crypto_aesni_mb0",
        "software:software"]
    chacha = place(make_sa("chacha20-poly1305"), "out", caps)
    assert str(chacha.engine) == "lookaside-crypto:crypto_aesni_mb0"
    assert reasons(chacha)["lookaside-crypto:crypto_aesni_gcm0"] == "chacha20-poly1305: no chacha20-poly1305"
    assert reasons(chacha)["lookaside-crypto:crypto_openssl0"] == "chacha20-poly1305: no chacha20-poly1305"
    cbc = place(make_sa("aes-cbc-256", "hmac-sha384-192", esn=True), "in", caps)
    assert str(cbc.engine) == "lookaside-crypto:crypto_aesni_mb0"
    assert "no aes-cbc" in reasons(cbc)["lookaside-crypto:crypto_aesni_gcm0"]
    # openssl has no CPU-crypto API, so it never appears on that rung.
    assert not any(c.kind == EngineKind.CPU_CRYPTO and "openssl" in c.device for c in p.eligible)
    # NULL encryption: only aesni_mb offers the null cipher among these.
    assert str(place(make_sa("null", "hmac-sha256-128"), "out", caps).engine) == "lookaside-crypto:crypto_aesni_mb0"


def test_no_dpdk_means_software_and_every_rung_explained():
    p = place(make_sa(), Direction.OUT, None)
    assert str(p.engine) == "software:software"
    assert [c.kind for c, _ in p.skipped] == list(ORDER[:-1])
    assert all(r.startswith("no device offers") for _, r in p.skipped)


def test_software_engine_algorithm_list():
    soft = (SoftwareEngine("ipsec-mb", frozenset({"aes-gcm-128"})), SoftwareEngine("reference", frozenset(
        ENC_ALGS) | frozenset(INTEG_ALGS)))
    p = place(make_sa("chacha20-poly1305"), "out", None, software=soft)
    assert str(p.engine) == "software:reference"
    assert reasons(p)["software:ipsec-mb"] == "does not implement chacha20-poly1305"
    assert place(make_sa("chacha20-poly1305"), "out", None, software=soft[:1]).engine is None


def test_fall_back_records_why():
    p = place(make_sa(), "out", tables(eth=[CNXK, IXGBE]))
    assert p.engine.kind == EngineKind.INLINE_PROTOCOL
    q = p.fall_back("rte_security_session_create: -ENOMEM")
    assert q.engine.kind == EngineKind.INLINE_CRYPTO
    assert reasons(q)["inline-protocol:0002:02:00.0"] == "rte_security_session_create: -ENOMEM"
    last = q.fall_back("x").fall_back("y")
    assert last.engine is None and last.fall_back("z") is last
    d = q.to_dict()
    assert d["engine"] == "inline-crypto:0000:01:00.0" and d["fallbacks"] == ["software:software"]
    assert {"engine": "inline-protocol:0002:02:00.0", "reason": "rte_security_session_create: -ENOMEM"} in d["skipped"]


def test_placement_is_pure_and_total(soft_devs):
    """Every algorithm combination, both directions, v4/v6, ESN, UDP: always an engine, ordered, repeatable."""
    caps = tables(eth=[IXGBE, CNXK], cdev=[LA_PROTO, QAT, *soft_devs])
    for enc, alg in ENC_ALGS.items():
        for integ in [None] if alg.aead else list(INTEG_ALGS):
            for flags in ({}, {"esn": True}, {"udp_encap": True, "v6": True}, {"mode": "transport"}):
                sa = make_sa(enc, integ, **flags)
                for d in ("in", "out"):
                    p = place(sa, d, caps)
                    assert p == place(sa, d, caps)
                    assert p.engine is not None
                    kinds = [c.kind for c in p.eligible]
                    assert kinds == sorted(kinds, key=ORDER.index)
                    for c in p.eligible:
                        if c.kind in (EngineKind.LOOKASIDE_CRYPTO, EngineKind.CPU_CRYPTO):
                            dev = next(x for x in caps.cryptodevs if x.name == c.device)
                            assert missing_crypto(sa, dev.sym) is None


def test_crypto_needs_follow_the_esp_contract():
    (gcm,) = crypto_needs(make_sa("aes-gcm-192", esn=True))
    assert (gcm.algo, gcm.key, gcm.digest, gcm.aad, gcm.iv) == ("aes-gcm", 24, 16, 12, 12)
    cbc, auth = crypto_needs(make_sa("aes-cbc-128", "hmac-sha384-192"))
    assert (cbc.algo, cbc.key, cbc.iv, auth.algo, auth.key, auth.digest) == ("aes-cbc", 16, 16, "sha2-384-hmac", 48,
                                                                               24)


def test_ranges():
    assert 24 in Range(16, 32, 8) and 20 not in Range(16, 32, 8)
    assert 16 in Range(16, 32) and 32 in Range(16, 32) and 24 not in Range(16, 32)
    assert 12 in Range(12, 12)


def test_tables_round_trip_json():
    caps = tables(eth=[IXGBE, CNXK], cdev=[LA_PROTO, QAT])
    assert DpdkCaps.from_dict(json.loads(json.dumps(caps.to_dict()))) == caps


def test_software_back_end_picked_per_sa_by_what_it_serves() -> None:
    """Without DPDK, each SA goes to the fastest present software engine that implements its algorithms."""
    from fastpath.placement import ALL_ALGORITHMS, present_software

    present = present_software()
    assert present and present[-1].name == "reference"     # the pure-Python fallback is always there
    gcm = make_sa("aes-gcm-128")
    assert place(gcm, Direction.OUT, None, present).engine.device == present[0].name
    # A faster engine lacking ChaCha20-Poly1305 loses that SA, and only that SA, to the next one.
    partial = SoftwareEngine("fast-no-chacha", frozenset(ALL_ALGORITHMS) - {"chacha20-poly1305"})
    engines = (partial, *present)
    assert place(gcm, Direction.OUT, None, engines).engine.device == "fast-no-chacha"
    chacha = place(make_sa("chacha20-poly1305"), Direction.OUT, None, engines)
    assert chacha.engine.device == present[0].name
    assert any("chacha20-poly1305" in why for cand, why in chacha.skipped if cand.device == "fast-no-chacha")
