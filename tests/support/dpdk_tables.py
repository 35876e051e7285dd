"""Capability tables for DPDK hardware we cannot have here (ixgbe, cnxk, a QAT-like card, a lookaside protocol
accelerator), written from the drivers' documented limits; the placement tests (unit, and against real
discovery in e2e) read them."""

from __future__ import annotations

from fastpath.dpdk.caps import CryptodevCaps, DpdkCaps, EthdevCaps, Range, SecurityCap, SymCap

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


def tables(*, eth=(), cdev=()) -> DpdkCaps:
    return DpdkCaps("test", (), tuple(eth), tuple(cdev))


def reasons(p) -> dict[str, str]:
    return {str(c): r for c, r in p.skipped}
