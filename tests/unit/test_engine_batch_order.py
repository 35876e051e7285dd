"""A batch gives the verdicts of its packets sent one at a time.

The C engines verify a whole batch's ICVs before they touch any replay state,
so they must re-check, in packet order, what earlier packets of the same batch
changed: duplicates within a batch, and ESN high halves that an earlier packet
of the batch moves (RFC 4303 Appendix A).  Checked against the reference
engine and against the same packets in batches of one.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from support.engines import ENGINES, install, new_engine, run
from support.packets import inner_packet
from support.sa import make_sa

from fastpath.status import Status

ALGS = [("aes-gcm-128", None), ("chacha20-poly1305", None), ("aes-cbc-128", "hmac-sha256-128"),
        ("null", "hmac-sha512-256"), ("aes-gmac-256", None)]
TOP = 2**32 - 10   # inbound window top just below the high-half boundary


def _packets(sa, seqs: list[int]) -> list[bytes]:
    """One ESP packet per sequence number, built by the reference engine."""
    out = []
    for k, seq in enumerate(seqs):
        eng = new_engine("reference", 1)
        install(eng, 0, dataclasses.replace(sa, seq=seq), "out")
        (status, pkt, _), = run(eng, "out", [inner_packet(4, bytes([k]) * 40).data])
        assert status == Status.OK
        out.append(pkt)
    return out


def _verdicts(name: str, sa, packets: list[bytes], one_by_one: bool):
    eng = new_engine(name, 1)
    install(eng, 0, sa, "in")
    if one_by_one:
        res = [r for p in packets for r in run(eng, "in", [p])]
    else:
        res = run(eng, "in", packets)
    return [(s, p if s == Status.OK else b"") for s, p, _ in res], eng.stats(0)


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a[0])
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_batch_equals_one_by_one(engine_name: str, alg, esn: bool) -> None:
    rng = random.Random(f"{alg}-{esn}")
    base = TOP + 1 if esn else 1000
    sa = make_sa(*alg, rng=rng, esn=esn, seq=base, replay_window=64)
    seqs = [base + 5, base + 5, base + 2, base + 300, base + 3, base + 299, base + 301, base + 301, base + 200,
            base + 400, base - 1, base + 250]
    if esn:
        seqs += [2**32 + 5, 2**32 - 2, 2**33 + 1]   # high half moved by packets earlier in the batch
    packets = _packets(sa, seqs)
    tampered = bytearray(packets[3])
    tampered[-1] ^= 1
    packets.insert(4, bytes(tampered))           # a forged copy must not move anything
    packets = packets + rng.sample(packets, 4)  # later replays of the same batch
    want = _verdicts("reference", sa, packets, one_by_one=True)
    got_batch = _verdicts(engine_name, sa, packets, one_by_one=False)
    got_single = _verdicts(engine_name, sa, packets, one_by_one=True)
    assert [s.name for s, _ in got_batch[0]] == [s.name for s, _ in want[0]]
    assert got_batch == want
    assert got_single == want


@pytest.mark.skipif("reference" not in ENGINES, reason="needs the reference engine")
def test_large_batch_spans_rounds(engine_name: str) -> None:
    """More packets than one C round (256 jobs): sequence numbers and verdicts carry across rounds."""
    sa = make_sa("aes-gcm-128", seq=1, replay_window=1024)
    out = new_engine(engine_name, 1)
    install(out, 0, sa, "out")
    inner = [inner_packet(4, bytes([k % 251]) * (k % 97)).data for k in range(700)]
    sent = run(out, "out", inner, mtu=1600)
    assert all(s == Status.OK for s, _, _ in sent)
    packets = [p for _, p, _ in sent]
    packets = packets + packets[:300]            # the replays land in a later round
    rx = new_engine(engine_name, 1)
    install(rx, 0, sa, "in")
    res = run(rx, "in", packets, mtu=1600)
    assert [s for s, _, _ in res] == [Status.OK] * 700 + [Status.REPLAY] * 300
    assert [p for _, p, _ in res[:700]] == inner
    assert rx.stats(0).seq == 700
