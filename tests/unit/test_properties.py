"""Property tests (hypothesis) through every engine's batch API.

* round trip: random SAs (any algorithm, mode, families, ESN, UDP, outer
  header policy, starting sequence number incl. the 32-bit edge) and random
  IPv4/IPv6 packets: outbound then inbound gives back the exact packet;
* garbage: random bytes and damaged ESP never raise and never come back OK;
* anti-replay: permuted and duplicated arrivals, windows up to 4096 and ESN
  crossing 2^32, against the small model below (RFC 4303 3.4.3, Appendix A).
"""

from __future__ import annotations

import dataclasses
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.engines import ALGORITHMS, install, new_engine, run
from support.packets import inner_packet, outer_esp
from support.sa import endpoints, make_sa

from fastpath.status import Status

# IPSG_HYPOTHESIS_EXAMPLES raises the example count for a deeper local run.
SETTINGS = settings(max_examples=int(os.environ.get("IPSG_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
M32 = 0xFFFFFFFF


# -- round trip ------------------------------------------------------------------

@st.composite
def sa_params(draw):
    enc, integ = draw(st.sampled_from(ALGORITHMS))
    mode = draw(st.sampled_from(["tunnel", "transport"]))
    inner_v = draw(st.sampled_from([4, 6]))
    outer_v = inner_v if mode == "transport" else draw(st.sampled_from([4, 6]))
    esn = draw(st.booleans())
    n = draw(st.integers(1, 6))
    if esn:
        # A fresh receiver (window top 0) can only place low halves below 2^32 - W in epoch 0,
        # so a start near 2^32 is reached by a priming packet first (see test body).
        start = draw(st.one_of(st.integers(1, 1000), st.integers(2**32 - 8, 2**32 + 8)))
    else:
        start = draw(st.one_of(st.integers(1, 1000), st.integers(2**32 - 1 - n, 2**32 - n)))
    extra = dict(
        udp_encap=draw(st.booleans()), ttl=draw(st.integers(1, 255)),
        df=draw(st.sampled_from(["copy", "set", "clear"])),
        dscp=draw(st.one_of(st.none(), st.integers(0, 63))),
        ecn=draw(st.sampled_from(["normal", "compat"])),
        flowlabel=draw(st.sampled_from(["copy", "zero"])),
        replay_window=draw(st.sampled_from([0, 32, 64, 1024, 4096])),
    )
    return enc, integ, mode, inner_v, outer_v, esn, start, n, extra


@st.composite
def packets(draw, version: int, n: int, src=None, dst=None):
    out = []
    for _ in range(n):
        payload = draw(st.binary(min_size=0, max_size=1400))
        proto = draw(st.sampled_from([17, 1, 6]))
        if proto == 6:
            payload = draw(st.binary(min_size=20, max_size=60)) + payload   # room for a TCP header
        tos = draw(st.integers(0, 255))
        flow = draw(st.integers(0, 0xFFFFF)) if version == 6 else 0
        out.append(inner_packet(version, payload[:1400], proto=proto, src=src, dst=dst, tos=tos, flow=flow).data)
    return out


@SETTINGS
@given(data=st.data())
def test_round_trip(engine_name: str, data) -> None:
    enc, integ, mode, inner_v, outer_v, esn, start, n, extra = data.draw(sa_params())
    seed = data.draw(st.binary(min_size=8, max_size=8))
    rng = random.Random(seed)
    src, dst = (str(a) for a in endpoints(outer_v)) if mode == "transport" else (None, None)
    pkts = data.draw(packets(inner_v, n, src, dst))
    sa = make_sa(enc, integ, rng=rng, family=outer_v, mode=mode, esn=esn, seq=start, **extra)
    tx, rx = new_engine(engine_name, 4), new_engine(engine_name, 4)
    install(tx, 0, sa, "out")
    # The receiver starts fresh (window top 0), whatever number the sender starts at.
    install(rx, 1, dataclasses.replace(sa, seq=1), "in")
    if esn and start > 2**31:
        prime = make_sa(enc, integ, spi=sa.spi, enc_key=sa.enc_key, integ_key=sa.integ_key, family=outer_v,
                        mode=mode, esn=True, seq=2**32 - 10_000, **extra)
        install(tx, 2, prime, "out")
        (s1, p, _), = run(tx, "out", [pkts[0]], 2)
        (s2, back, _), = run(rx, "in", [p])
        assert (s1, s2, back) == (Status.OK, Status.OK, pkts[0])
    out = run(tx, "out", pkts, 0)
    assert [s for s, _, _ in out] == [Status.OK] * n
    back = run(rx, "in", [p for _, p, _ in out])
    for i, (status, pkt, idx) in enumerate(back):
        assert status == Status.OK, f"packet {i}: {status.name}"
        assert pkt == pkts[i], f"packet {i} differs after the round trip"
        assert idx == 1
    assert tx.stats(0).seq == start + n
    assert rx.stats(1).seq == start + n - 1


# -- garbage -----------------------------------------------------------------------

GARBAGE_SPI = 0x0BADF00D


@SETTINGS
@given(data=st.data())
def test_garbage_never_ok(engine_name: str, data) -> None:
    enc, integ = data.draw(st.sampled_from(ALGORITHMS))
    esn = data.draw(st.booleans())
    udp = data.draw(st.booleans())
    v = data.draw(st.sampled_from([4, 6]))
    sa = make_sa(enc, integ, rng=random.Random(1), spi=GARBAGE_SPI, family=v, esn=esn, udp_encap=udp)
    tx, rx = new_engine(engine_name, 4), new_engine(engine_name, 4)
    install(tx, 0, sa, "out")
    install(rx, 0, sa, "in")
    good = [p for _, p, _ in run(tx, "out", [inner_packet(4, b"x" * 40).data] * 3, 0)]
    src, dst = (str(a) for a in endpoints(v))
    junk = []
    for _ in range(data.draw(st.integers(1, 12))):
        kind = data.draw(st.integers(0, 4))
        if kind == 0:       # anything at all
            junk.append(data.draw(st.binary(min_size=0, max_size=300)))
        elif kind == 1:     # a well-formed outer header around random ESP for a known SPI
            body = data.draw(st.binary(min_size=0, max_size=300))
            junk.append(outer_esp(src, dst, struct.pack("!I", GARBAGE_SPI) + body, udp_encap=udp))
        else:               # a genuine packet with flipped bits or cut short
            p = bytearray(data.draw(st.sampled_from(good)))
            hdr = 20 if v == 4 else 40
            if kind == 2:
                for pos in data.draw(st.lists(st.integers(hdr + (8 if udp else 0), len(p) - 1),
                                              min_size=1, max_size=4, unique=True)):
                    p[pos] ^= data.draw(st.integers(1, 255))
            else:
                p = p[: data.draw(st.integers(0, len(p) - 1))]
            junk.append(bytes(p))
    res = run(rx, "in", junk)          # must not raise
    assert all(s != Status.OK for s, _, _ in res), [s.name for s, _, _ in res]


# -- anti-replay ---------------------------------------------------------------------

def infer(top: int, lo: int, w: int) -> int | None:
    """RFC 4303 Appendix A: the 64-bit number for a received low half, None outside 0..2^64-1."""
    th, tl = top >> 32, top & M32
    bottom = (tl - w + 1) & M32
    if tl >= w - 1:
        hi = th if lo >= bottom else th + 1
    else:
        hi = th - 1 if lo >= bottom else th
    return None if hi < 0 else (hi << 32) | lo


class ReplayModel:
    """What the receiver must answer, one arrival at a time (docs/esp.md inbound 4-6)."""

    def __init__(self, window: int, esn: bool):
        self.w, self.esn, self.top, self.seen = window, esn, 0, set()

    def arrive(self, seq: int) -> Status:
        s = infer(self.top, seq & M32, self.w or 64) if self.esn else seq
        if not s:
            return Status.REPLAY
        if self.w and (s <= self.top - self.w or s in self.seen):
            return Status.REPLAY
        if s != seq:                    # wrong high half: the ICV cannot verify
            return Status.AUTH_FAILED
        self.seen.add(s)
        self.top = max(self.top, s)
        return Status.OK


class Sealer:
    """Tunnel-mode AES-GCM ESP at any sequence number, built from RFC 4106 with `cryptography`."""

    def __init__(self, sa):
        self.sa, self.aead = sa, AESGCM(sa.cipher_key)

    def packet(self, seq: int) -> tuple[bytes, bytes]:
        inner = inner_packet(4, struct.pack("!Q", seq) + b"replay").data
        pad = (-(len(inner) + 2)) % 4
        pt = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
        iv = struct.pack("!Q", seq)
        aad = struct.pack("!I", self.sa.spi) + (struct.pack("!Q", seq) if self.sa.esn else struct.pack("!I", seq & M32))
        esp = struct.pack("!II", self.sa.spi, seq & M32) + iv + self.aead.encrypt(self.sa.salt + iv, pt, aad)
        return outer_esp(str(self.sa.src), str(self.sa.dst), esp), inner


@st.composite
def arrivals(draw):
    window = draw(st.sampled_from([0, 1, 2, 31, 32, 64, 65, 128, 1000, 4096]))
    esn = draw(st.booleans())
    span = draw(st.integers(4, 2 * max(window, 8) + 40))
    if esn:
        base = draw(st.sampled_from([1, 2**32 - span // 2, 2**32 + 5]))
    else:
        base = draw(st.sampled_from([0, 1, 2**32 - span]))   # 0: arrivals may include the reserved 0
    offsets = draw(st.lists(st.integers(0, span - 1), min_size=1, max_size=60))
    # Duplicate some arrivals and shuffle: late, early and repeated packets.
    dups = draw(st.lists(st.sampled_from(offsets), max_size=15))
    order = draw(st.permutations(offsets + dups))
    return window, esn, base, [base + o for o in order]


def _prime(seqs: list[int], window: int) -> int | None:
    """A number a fresh receiver places in epoch 0, below every arrival, when arrivals sit near 2^32.

    Appendix A leaves a high low-half on a fresh window (top 0) in "epoch -1"; docs/esp.md does
    not say what then, so the arrivals are kept away from that corner by moving the window first.
    """
    if max(seqs) < 2**31:
        return None
    return 2**32 - 3 * max(window, 64) - 2**16


@SETTINGS
@given(case=arrivals())
def test_replay_window_matches_model(engine_name: str, case) -> None:
    window, esn, base, seqs = case
    sa = make_sa("aes-gcm-128", rng=random.Random(7), esn=esn, replay_window=window)
    sealer = Sealer(sa)
    model = ReplayModel(window, esn)
    seq_eng, batch_eng = new_engine(engine_name, 2), new_engine(engine_name, 2)
    install(seq_eng, 0, sa, "in")
    install(batch_eng, 0, sa, "in")
    prime = _prime(seqs, window) if esn else None
    if prime is not None:
        p, _ = sealer.packet(prime)
        assert model.arrive(prime) == Status.OK
        for eng in (seq_eng, batch_eng):
            assert run(eng, "in", [p])[0][0] == Status.OK

    built = [sealer.packet(s) for s in seqs]
    expected = [model.arrive(s) for s in seqs]
    # One arrival per engine call: statuses exactly as the model says.
    got = []
    for pkt, inner in built:
        (status, out, _), = run(seq_eng, "in", [pkt])
        got.append(status)
        if status == Status.OK:
            assert out == inner
    assert got == expected, _explain(window, esn, seqs, expected, got)
    assert seq_eng.stats(0).seq == model.top

    # All arrivals in one batch: the same packets must be accepted; a batch engine may
    # report an old ESN packet as REPLAY where one-at-a-time inference makes it AUTH_FAILED.
    res = run(batch_eng, "in", [p for p, _ in built])
    ok_b = [s == Status.OK for s, _, _ in res]
    assert ok_b == [e == Status.OK for e in expected], _explain(window, esn, seqs, expected, [s for s, _, _ in res])
    for (status, out, _), (_, inner), want in zip(res, built, expected, strict=True):
        if status == Status.OK:
            assert out == inner
        elif esn:
            assert status in (Status.REPLAY, Status.AUTH_FAILED)
        else:
            assert status == want
    assert batch_eng.stats(0).seq == model.top


def _explain(window, esn, seqs, expected, got) -> str:
    diffs = [(i, s, e.name, g.name) for i, (s, e, g) in enumerate(zip(seqs, expected, got, strict=True)) if e != g]
    return f"window={window} esn={esn}: first differences (index, seq, model, engine): {diffs[:8]}"


@pytest.mark.parametrize("window", [64, 4096])
def test_esn_wrap_sequential(engine_name: str, window: int) -> None:
    """In-order traffic across 2^32 with ESN: every packet accepted, stats.seq follows."""
    sa = make_sa("aes-gcm-256", rng=random.Random(3), esn=True, replay_window=window)
    sealer = Sealer(sa)
    eng = new_engine(engine_name, 2)
    install(eng, 0, sa, "in")
    seqs = [2**32 - 3 * window - 10] + list(range(2**32 - 20, 2**32 + 20))
    res = run(eng, "in", [sealer.packet(s)[0] for s in seqs])
    assert [s for s, _, _ in res] == [Status.OK] * len(seqs)
    assert eng.stats(0).seq == seqs[-1]
    # The newest numbers again: all replays.
    res = run(eng, "in", [sealer.packet(s)[0] for s in seqs[-5:]])
    assert [s for s, _, _ in res] == [Status.REPLAY] * 5
