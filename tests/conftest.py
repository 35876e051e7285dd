"""Shared fixtures and small builders for the ESP engine tests.

The builders here are written from the RFCs (RFC 791, 8200, 768, 4303), not
from fastpath.iphdr, so that a test never checks an engine against the code
that engine itself uses.

tests/ is on sys.path (pytest puts a rootdir conftest's folder there; this says so out loud), so the tests in
unit/, interop/ and e2e/ import their shared helpers as ``support.<module>``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
from support.netns_tools import inet_checksum
from support.shm_helpers import region_file

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath.batch import Batch
from fastpath.engines import create, present_names
from fastpath.status import Status

ENGINES = present_names()

# (enc, integ) pairs the engines must support; the order is the report order.
ALGORITHMS: list[tuple[str, str | None]] = [
    ("aes-gcm-128", None), ("aes-gcm-192", None), ("aes-gcm-256", None),
    ("aes-gmac-128", None), ("aes-gmac-192", None), ("aes-gmac-256", None),
    ("chacha20-poly1305", None),
    ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-128", "hmac-sha384-192"), ("aes-cbc-128", "hmac-sha512-256"),
    ("aes-cbc-256", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha384-192"), ("aes-cbc-256", "hmac-sha512-256"),
    ("null", "hmac-sha256-128"),
]


def alg_id(alg: tuple[str, str | None]) -> str:
    return alg[0] if alg[1] is None else f"{alg[0]}+{alg[1]}"


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


def new_engine(name: str, capacity: int = 256):
    return create(name, capacity=capacity)


# -- SAs -----------------------------------------------------------------------

V4_A, V4_B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("198.51.100.2")
V6_A, V6_B = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8:ffff::2")


def endpoints(family: int) -> tuple:
    return (V4_A, V4_B) if family == 4 else (V6_A, V6_B)


def make_sa(enc: str, integ: str | None = None, *, rng: random.Random | None = None, family: int = 4,
            **kw) -> SA:
    """An SA with random keys of the right sizes; keyword arguments override fields."""
    rng = rng or random.Random(os.urandom(8))
    alg = ENC_ALGS[enc]
    kw.setdefault("spi", rng.randrange(0x1000, 0xFFFFFFFF))
    src, dst = endpoints(family)
    kw.setdefault("src", src)
    kw.setdefault("dst", dst)
    kw.setdefault("enc_key", rng.randbytes(alg.config_key_len))
    if integ:
        kw.setdefault("integ_key", rng.randbytes(INTEG_ALGS[integ].key_len))
    return SA(enc=enc, integ=integ, **kw)


# -- packets -------------------------------------------------------------------

def ipv4(src, dst, proto: int, payload: bytes, *, tos: int = 0, ttl: int = 64, ident: int = 0x1234,
         df: bool = False) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0,
                                ttl, proto, 0, ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed))
    hdr[10:12] = struct.pack("!H", inet_checksum(bytes(hdr)))
    return bytes(hdr) + payload


def ipv6(src, dst, nh: int, payload: bytes, *, tclass: int = 0, flow: int = 0, hlim: int = 64) -> bytes:
    first = (6 << 28) | (tclass << 20) | flow
    return struct.pack("!IHBB16s16s", first, len(payload), nh, hlim, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def udp(src, dst, sport: int, dport: int, payload: bytes, checksum: bool = True) -> bytes:
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if not checksum:
        return seg
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    pseudo = s + d + (struct.pack("!BBH", 0, 17, length) if len(s) == 4 else struct.pack("!IxxxB", length, 17))
    c = inet_checksum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def outer_esp(src, dst, esp: bytes, *, udp_encap: bool = False, sport: int = 4500, dport: int = 4500) -> bytes:
    """An outer IP packet (version from the addresses) carrying ESP, optionally in UDP (RFC 3948)."""
    v6 = ipaddress.ip_address(src).version == 6
    if udp_encap:
        esp = udp(src, dst, sport, dport, esp, checksum=v6)
    proto = 17 if udp_encap else 50
    return ipv6(src, dst, proto, esp) if v6 else ipv4(src, dst, proto, esp)


@dataclass
class Inner:
    """A plain IP packet the tests send through a tunnel or transport SA."""

    data: bytes
    version: int


def inner_packet(version: int, payload: bytes, *, proto: int = 17, src=None, dst=None, tos: int = 0,
                 flow: int = 0) -> Inner:
    """A UDP (or other protocol) packet with valid headers around ``payload``."""
    if version == 4:
        src, dst = src or "10.1.0.1", dst or "10.2.0.2"
        body = udp(src, dst, 1234, 5678, payload) if proto == 17 else payload
        return Inner(ipv4(src, dst, proto, body, tos=tos, df=True), 4)
    src, dst = src or "fd00:1::1", dst or "fd00:2::2"
    body = udp(src, dst, 1234, 5678, payload) if proto == 17 else payload
    return Inner(ipv6(src, dst, proto, body, tclass=tos, flow=flow), 6)


# -- batches -------------------------------------------------------------------

def run(engine, direction: str, packets: list[bytes], sa: list[int] | int = 0,
        mtu: int = 2000) -> list[tuple[Status, bytes, int]]:
    """One engine call over all packets; (status, packet, sa index) per packet."""
    batch = Batch(capacity=max(1, len(packets)), mtu=mtu)
    idx = sa if isinstance(sa, list) else [sa] * len(packets)
    for p, i in zip(packets, idx, strict=True):
        batch.append(p, i)
    (engine.outbound if direction == "out" else engine.inbound)(batch)
    return [(Status(int(batch.status[i])), batch.packet(i), int(batch.sa[i])) for i in range(batch.n)]


def install(engine, index: int, sa: SA, direction: str) -> None:
    engine.add_sa(index, sa, Direction.OUT if direction == "out" else Direction.IN)


# -- shared-memory regions -----------------------------------------------------

@pytest.fixture
def shm_path(tmp_path):
    """A region file name no other test uses, removed afterwards."""
    path = region_file(tmp_path)
    yield path
    path.unlink(missing_ok=True)
