"""The one SA builder of the tests, and scapy's view of the same SA.

scapy's ESP is an implementation we did not write, so a packet one of our engines makes must decrypt there
(and the other way round); ``scapy_sa`` is the only place that maps our SA onto scapy's.
"""

from __future__ import annotations

import ipaddress
import os
import random
from typing import Any, Literal

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Mode

V4_A, V4_B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("198.51.100.2")
V6_A, V6_B = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8:ffff::2")

# "random": new keys every call (from ``rng`` when given); "zero": all-zero keys (placement and capability
# tests, where only the sizes matter); "fixed": the same keys for the same algorithms in every run and
# every process (DPDK job runners rebuild the SA from JSON; a failure reproduces with the same bytes).
Keys = Literal["random", "zero", "fixed"]


def endpoints(family: int) -> tuple:
    """The outer addresses every builder uses unless told otherwise (RFC 5737 / RFC 3849 ranges)."""
    return (V4_A, V4_B) if family == 4 else (V6_A, V6_B)


def make_sa(enc: str = "aes-gcm-128", integ: str | None = None, *, family: int = 4, keys: Keys = "random",
            rng: random.Random | None = None, **kw: Any) -> SA:
    """An SA with keys of the right sizes for ``enc`` and ``integ``; keyword arguments override any field.

    Without ``spi`` a random one is drawn (from ``rng`` when given); ``src``/``dst`` may be strings.
    """
    if keys == "fixed":
        rng = random.Random(f"{enc}/{integ}")
    elif rng is None:
        rng = random.Random(os.urandom(8))

    def key(n: int) -> bytes:
        return bytes(n) if keys == "zero" else rng.randbytes(n)

    kw.setdefault("spi", rng.randrange(0x1000, 0xFFFFFFFF))
    src, dst = endpoints(family)
    kw["src"] = ipaddress.ip_address(kw.get("src", src))
    kw["dst"] = ipaddress.ip_address(kw.get("dst", dst))
    kw.setdefault("enc_key", key(ENC_ALGS[enc].config_key_len))
    if integ:
        kw.setdefault("integ_key", key(INTEG_ALGS[integ].key_len))
    return SA(enc=enc, integ=integ, **kw)


SCAPY_CRYPT = {"aes-gcm": "AES-GCM", "aes-gmac": "AES-NULL-GMAC", "chacha20-poly1305": "CHACHA20-POLY1305",
               "aes-cbc": "AES-CBC", "null": "NULL"}
SCAPY_AUTH = {"hmac-sha256-128": "SHA2-256-128", "hmac-sha384-192": "SHA2-384-192",
              "hmac-sha512-256": "SHA2-512-256"}


def scapy_crypt(enc: str) -> str:
    """scapy's name for the cipher family of ``enc`` (key sizes are scapy's business: it reads the key)."""
    return next(v for k, v in SCAPY_CRYPT.items() if enc.startswith(k))


def scapy_sa(sa: SA, *, seq: int | None = None, esn_hi: int = 0, tunnel: bool | None = None):
    """scapy's SecurityAssociation for ``sa`` (keys as configured: cipher key + salt).

    ``seq`` sets scapy's counter
    (its high half the ESN's), otherwise scapy counts from its own start with ``esn_hi`` as the high half;
    ``tunnel`` forces a tunnel header on or off (default: the SA's mode says).
    """
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation

    header = None
    if (sa.mode is Mode.TUNNEL) if tunnel is None else tunnel:
        header = (IP if sa.src.version == 4 else IPv6)(src=str(sa.src), dst=str(sa.dst))
    args: dict[str, Any] = {}
    if seq is not None:
        args["seq_num"] = seq & 0xFFFFFFFF
        esn_hi = seq >> 32
    return SecurityAssociation(
        ESP, spi=sa.spi, crypt_algo=scapy_crypt(sa.enc), crypt_key=sa.enc_key or None,
        crypt_icv_size=16 if sa.enc_alg.aead else None,
        auth_algo=SCAPY_AUTH[sa.integ] if sa.integ else None, auth_key=sa.integ_key or None,
        tunnel_header=header, nat_t_header=UDP(sport=sa.sport, dport=sa.dport) if sa.udp_encap else None,
        esn_en=sa.esn, esn=esn_hi, **args)
