"""Each compiled engine and the reference engine agree.

Same SA and same input batch: byte-identical outbound packets where the
output is deterministic (AEADs use the sequence number as IV; NULL has no IV),
packets that decrypt across engines for AES-CBC (random IV), and identical
inbound verdicts, packets and counters for a batch mixing genuine, damaged and
foreign packets.
"""

from __future__ import annotations

import random
import struct

import pytest
from support.engines import ALGORITHMS, ENGINES, alg_id, install, new_engine, run
from support.packets import inner_packet
from support.sa import endpoints, make_sa

from fastpath.batch import Batch
from fastpath.status import Status

# Each compiled engine is checked against the reference.
C_ENGINES = [n for n in ("openssl", "ipsec-mb") if n in ENGINES]
pytestmark = pytest.mark.skipif(not C_ENGINES or "reference" not in ENGINES,
                                reason="needs a compiled engine and the reference engine")


@pytest.fixture(params=C_ENGINES or ["openssl"])
def c_engine(request) -> str:
    return request.param

SHAPES = [("tunnel", 4, 4, False, False), ("tunnel", 6, 6, True, False), ("tunnel", 4, 6, False, True),
          ("tunnel", 6, 4, True, True), ("transport", 4, 4, True, True), ("transport", 6, 6, False, False)]


def _setup(enc: str, integ: str | None, seed: str):
    rng = random.Random(seed)
    sas, inners = [], []
    for k, (mode, inner_v, outer_v, esn, udp) in enumerate(SHAPES):
        seq = 2**32 - 3 if esn else rng.randrange(1, 1000)
        sas.append(make_sa(enc, integ, rng=rng, spi=0x1000 + k, family=outer_v, mode=mode, esn=esn,
                           udp_encap=udp, seq=seq, dscp=rng.choice([None, 10]), df=rng.choice(["copy", "set"])))
        src, dst = (str(a) for a in endpoints(outer_v)) if mode == "transport" else (None, None)
        inners.append([inner_packet(inner_v, rng.randbytes(rng.randrange(0, 1400)), src=src, dst=dst,
                                    tos=rng.randrange(256), flow=rng.randrange(1 << 20)).data for _ in range(6)])
    return sas, inners


def _esp_offset(pkt: bytes | bytearray) -> int:
    """Start of ESP in an outer packet without IPv6 extension headers."""
    v4 = pkt[0] >> 4 == 4
    off, proto = ((pkt[0] & 15) * 4, pkt[9]) if v4 else (40, pkt[6])
    return off + 8 if proto == 17 else off


def _engines(sas, direction: str, c_engine: str):
    engs = {name: new_engine(name, len(sas)) for name in (c_engine, "reference")}
    for eng in engs.values():
        for k, sa in enumerate(sas):
            install(eng, k, sa, direction)
    return engs


def _outbound(engs, inners):
    pkts = [p for ps in inners for p in ps]
    idx = [k for k, ps in enumerate(inners) for _ in ps]
    return {name: run(eng, "out", pkts, idx) for name, eng in engs.items()}


@pytest.mark.parametrize("alg", [a for a in ALGORITHMS if a[0] != "aes-cbc-128" and a[0] != "aes-cbc-256"],
                         ids=alg_id)
def test_deterministic_outbound_identical(alg, c_engine: str) -> None:
    sas, inners = _setup(*alg, seed=f"det-{alg}")
    res = _outbound(_engines(sas, "out", c_engine), inners)
    diffs = [i for i, (a, b) in enumerate(zip(res[c_engine], res["reference"], strict=True)) if a[:2] != b[:2]]
    assert all(s == Status.OK for s, _, _ in res["reference"])
    assert not diffs, f"{alg_id(alg)}: outbound packets differ at {diffs[:10]} " \
                      f"(shape {SHAPES[diffs[0] // 6][:3]}, first: {res[c_engine][diffs[0]][1][:48].hex()} vs " \
                      f"{res['reference'][diffs[0]][1][:48].hex()})"


@pytest.mark.parametrize("alg", [a for a in ALGORITHMS if a[0].startswith("aes-cbc")], ids=alg_id)
def test_cbc_cross_decrypt(alg, c_engine: str) -> None:
    sas, inners = _setup(*alg, seed=f"cbc-{alg}")
    out = _outbound(_engines(sas, "out", c_engine), inners)
    for tx, rx in ((c_engine, "reference"), ("reference", c_engine)):
        rx_eng = new_engine(rx, len(sas))
        for k, sa in enumerate(sas):
            install(rx_eng, k, sa, "in")
        assert all(s == Status.OK for s, _, _ in out[tx])
        back = run(rx_eng, "in", [p for _, p, _ in out[tx]])
        want = [p for ps in inners for p in ps]
        assert [s for s, _, _ in back] == [Status.OK] * len(want), f"{tx} -> {rx}"
        assert [p for _, p, _ in back] == want, f"{tx} -> {rx}: decrypted packets differ"
    # Different random IVs, same framing: the headers before the IV (but an IPv6 UDP checksum,
    # which covers the IV) and the lengths match.
    for (_, a, _), (_, b, _) in zip(out[c_engine], out["reference"], strict=True):
        off = _esp_offset(a)
        udp_sum = slice(off - 2, off) if a[0] >> 4 == 6 and a[6] == 17 else slice(0, 0)
        a, b = bytearray(a), bytearray(b)
        a[udp_sum] = b[udp_sum] = b""
        assert len(a) == len(b) and a[: off + 6] == b[: off + 6]


@pytest.mark.parametrize("alg", ALGORITHMS, ids=alg_id)
def test_inbound_verdicts_identical(alg, c_engine: str) -> None:
    """Genuine, tampered, truncated, replayed, unknown-SPI and junk packets: same answers from both."""
    sas, inners = _setup(*alg, seed=f"in-{alg}")
    tx = new_engine("reference", len(sas))
    for k, sa in enumerate(sas):
        install(tx, k, sa, "out")
    good = [p for _, p, _ in _outbound({"reference": tx}, inners)["reference"]]
    rng = random.Random(f"junk-{alg}")
    mixed = list(good[::2])
    for p in good[1::2]:
        b = bytearray(p)
        choice = rng.randrange(5)
        if choice == 0:
            b[rng.randrange(len(b) - 20, len(b))] ^= 1 << rng.randrange(8)     # ICV / trailer area
        elif choice == 1:
            b = b[: rng.randrange(len(b))]
        elif choice == 2:
            b = bytearray(good[0])                                             # a replay
        elif choice == 3:
            off = _esp_offset(b)
            b[off:off + 4] = struct.pack("!I", 0xDEAD)                          # nobody's SPI
        else:
            b = bytearray(rng.randbytes(rng.randrange(0, 120)))
        mixed.append(bytes(b))
    results = {}
    for name in (c_engine, "reference"):
        eng = new_engine(name, len(sas))
        for k, sa in enumerate(sas):
            install(eng, k, sa, "in")      # an inbound SA's seq: the first number it expects
        res = run(eng, "in", mixed)
        results[name] = ([(s, p if s == Status.OK else b"", i if s == Status.OK else None) for s, p, i in res],
                         [eng.stats(k) for k in range(len(sas))], eng.engine_drops())
    o, r = results[c_engine], results["reference"]
    diffs = [(i, a[0].name, b[0].name) for i, (a, b) in enumerate(zip(o[0], r[0], strict=True)) if a != b]
    assert not diffs, f"{alg_id(alg)}: inbound differs (index, {c_engine}, reference): {diffs[:10]}"
    assert o[1] == r[1], f"{alg_id(alg)}: per-SA stats differ"
    assert o[2] == r[2], f"{alg_id(alg)}: engine-wide drops differ: {o[2]} vs {r[2]}"


def test_too_big_consumes_no_sequence_or_ip_id(c_engine: str) -> None:
    """A packet dropped TOO_BIG uses neither a sequence number nor an outer IPv4 ID, on both engines."""
    sa = make_sa("aes-cbc-128", "hmac-sha256-128", family=4, seq=7)
    big = inner_packet(4, bytes(100)).data        # 128 bytes: 204 once framed, over the 192-byte slot
    small = inner_packet(4, bytes(8)).data
    for name in (c_engine, "reference"):
        eng = new_engine(name, 1)
        install(eng, 0, sa, "out")
        batch = Batch(capacity=2, mtu=128, headroom=64, tailroom=0)
        assert batch.slot_size == 192
        batch.extend([big, small])
        eng.outbound(batch)
        assert [Status(int(s)) for s in batch.status[:2]] == [Status.TOO_BIG, Status.OK], name
        out = batch.packet(1)
        assert struct.unpack_from("!H", out, 4)[0] == 0, f"{name}: outer IPv4 ID advanced past a dropped packet"
        assert struct.unpack_from("!I", out, 24)[0] == 7, f"{name}: a dropped packet consumed a sequence number"
        assert eng.stats(0).drops.get(Status.TOO_BIG) == 1
