"""The DPDK cryptodev tests' cells (test_dpdk_cryptodev, test_dpdk_loop, test_dpdk_security): the algorithm
pairs the crypto PMDs and ipsec-mb serve, one SA per cell, the inner packets, one engine call, and the SA as
the DPDK job runners read it from JSON."""

from __future__ import annotations

from typing import Any

from scapy.all import IP, UDP, IPv6, Raw

from cdefs.sa import SA
from fastpath.batch import Batch
from fastpath.status import Status
from support.sa import make_sa as build_sa

# (enc, integ) pairs the crypto PMDs and ipsec-mb serve
ALGS = [("aes-gcm-128", None), ("aes-gcm-256", None), ("aes-gmac-128", None), ("chacha20-poly1305", None),
        ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha512-256"), ("null", "hmac-sha384-192")]
ESN_START = 2**32 - 3   # ESN cases cross the 2^32 boundary
N_INNER = 10


def make_sa(enc: str, integ: str | None, esn: bool, **kw: Any) -> SA:
    """One cell's SA (support.sa's builder with the cells' SPI, addresses and window; ESN cells start just
    below 2^32)."""
    kw.setdefault("seq", ESN_START if esn else 1)
    kw.setdefault("spi", 0x7007)
    return build_sa(enc, integ, keys="fixed", src="192.0.2.1", dst="192.0.2.2", esn=esn, replay_window=32, **kw)


def inner_packets() -> list[bytes]:
    out = []
    for k in range(N_INNER):
        if k % 4 == 3:
            p = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=k, dport=9) / Raw(bytes([k]) * (k * 37))
        else:
            p = IP(src="10.0.0.1", dst="10.0.0.2", tos=k, flags="DF" if k % 2 else 0) / UDP(sport=k, dport=9) \
                / Raw(bytes([k]) * (k * 131 % 1300))
        out.append(bytes(p))
    return out


def run_engine(engine: Any, sa: SA, direction: str, packets: list[bytes]) -> tuple[list[Status], list[bytes]]:
    engine.add_sa(0, sa, direction)
    b = Batch(capacity=len(packets))
    b.extend(packets)
    (engine.outbound if direction == "out" else engine.inbound)(b)
    return [Status(int(s)) for s in b.status[:b.n]], list(b)


def sa_json(sa: SA) -> dict[str, Any]:
    return {"spi": sa.spi, "enc": sa.enc, "enc_key": sa.enc_key.hex(), "integ": sa.integ,
            "integ_key": sa.integ_key.hex(), "esn": sa.esn, "seq": sa.seq}
