"""SA placement with the software PMDs (aesni_gcm, aesni_mb, openssl) as real DPDK discovery describes them
(EAL in a child process, once per module), beside the hardware tables of support.dpdk_tables; the ladder
without DPDK is tests/unit/test_placement.py."""

from __future__ import annotations

from functools import partial

import pytest
from support.dpdk_tables import CNXK, IXGBE, LA_PROTO, QAT, reasons, tables
from support.sa import make_sa as build_sa

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from fastpath.dpdk.caps import CryptodevCaps
from fastpath.placement import ORDER, EngineKind, missing_crypto, place

make_sa = partial(build_sa, spi=0x1000, keys="zero")


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


def test_placement_is_pure_and_total(soft_devs):
    """Every algorithm combination, both directions, v4/v6, ESN, UDP: always an engine, ordered, repeatable."""
    caps = tables(eth=[IXGBE, CNXK], cdev=[LA_PROTO, QAT, *soft_devs])
    for enc, alg in ENC_ALGS.items():
        for integ in [None] if alg.aead else list(INTEG_ALGS):
            for flags in ({}, {"esn": True}, {"udp_encap": True, "family": 6}, {"mode": "transport"}):
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

