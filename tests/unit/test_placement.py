"""SA placement over capability tables.

Hardware we cannot have here (ixgbe, cnxk, a QAT-like card, a lookaside
protocol accelerator) appears as capability tables written from the drivers'
documented limits.  The software PMDs (aesni_gcm, aesni_mb, openssl) are not
faked: the ladder with their tables from real DPDK discovery is in tests/e2e/test_placement_discovery.py.
"""

from __future__ import annotations

import json
from functools import partial

from support.dpdk_tables import (
    ALL_OPTIONS,
    CNXK,
    FULL_SET,
    IXGBE,
    LA_PROTO,
    QAT,
    reasons,
    sec_caps,
    tables,
)
from support.sa import make_sa as build_sa

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import Direction
from fastpath.dpdk.caps import CryptodevCaps, DpdkCaps, EthdevCaps, Range, SecurityCap
from fastpath.placement import ORDER, EngineKind, SoftwareEngine, crypto_needs, place

make_sa = partial(build_sa, spi=0x1000, keys="zero")


# ---- the ladder

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
    sa = make_sa("aes-gcm-256", esn=True, udp_encap=True, family=6, replay_window=1024)
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
    assert reasons(place(make_sa(family=6), "out", tables(eth=[v4only])))["inline-crypto:v4only"] == "no IPv6 support"
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


def test_ah_is_never_offloaded_and_says_so_per_sa():
    # a full house of offload-capable devices (CNXK inline protocol, a lookaside protocol device, QAT) takes
    # an ESP SA and none of them an AH one: every DPDK rung names the reason, a software engine runs it
    from support.ah import make_ah_sa

    caps = tables(eth=[CNXK], cdev=[LA_PROTO, QAT])
    assert place(make_sa(), "out", caps).engine.kind != EngineKind.SOFTWARE
    soft = (SoftwareEngine("ipsec-mb", frozenset({"aes-gcm-128"}), frozenset({"hmac-sha256-128"})),
            SoftwareEngine("reference", frozenset(), frozenset({"hmac-sha256-128", "hmac-sha1-96"})))
    for direction in ("out", "in"):
        p = place(make_ah_sa("hmac-sha256-128"), direction, caps, software=soft)
        assert str(p.engine) == "software:ipsec-mb" and [str(c) for c in p.eligible] == \
            ["software:ipsec-mb", "software:reference"]
        why = reasons(p)
        assert {c.kind for c, _ in p.skipped} == set(ORDER[:-1])
        assert all("AH is not offloaded" in why[str(c)] for c, _ in p.skipped), why
        # named per device that offers the kind (what list-sas shows), "-" only where none does
        named = {c.device for c, _ in p.skipped}
        assert {CNXK.name, LA_PROTO.name, QAT.name} <= named, named
    p = place(make_ah_sa("hmac-sha1-96"), "out", caps, software=soft)
    assert str(p.engine) == "software:reference"
    assert reasons(p)["software:ipsec-mb"] == "does not implement AH with hmac-sha1-96"
    assert place(make_ah_sa("aes-gmac-128"), "out", caps, software=soft).engine is None
