"""Anti-replay window and ESN inference against a set-based model.

The model knows nothing about bitmaps or RFC 4303 Appendix A's case split:
it keeps every accepted 64-bit number and the top, and infers the high half
as "the unique number with these low 32 bits in [top - W + 1, top - W + 2^32]",
which is what Appendix A computes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.replay import SEQ32_MAX, SEQ64_MAX, ReplayWindow

WINDOWS = st.one_of(st.sampled_from([0, 1, 2, 31, 32, 63, 64, 65, 128, 1000, 1024, 4095, 4096]),
                    st.integers(0, 4096))


class Model:
    def __init__(self, window: int, esn: bool, top: int = 0):
        self.window, self.esn, self.top = window, esn, top
        self.accepted: set[int] = set()

    def expect(self, seq_lo: int) -> int | None:
        w = self.window or 64
        if self.esn:
            low = self.top - w + 1
            seq = low + ((seq_lo - low) % 2**32)
            if seq < 0:     # no epoch below 0: the only valid reading is one epoch up
                seq += 2**32
        else:
            seq = seq_lo
        if not 0 < seq <= SEQ64_MAX:
            return None
        if self.window and (seq <= self.top - self.window or seq in self.accepted):
            return None
        return seq

    def accept(self, seq: int) -> None:
        self.accepted.add(seq)
        self.top = max(self.top, seq)


def run(window: int, esn: bool, top: int, arrivals: list[tuple[int, bool]]) -> None:
    rw = ReplayWindow(window, esn, top=top)
    model = Model(window, esn, top)
    for seq, icv_ok in arrivals:
        seq_lo = seq & SEQ32_MAX
        got = rw.check(seq_lo)
        assert got == model.expect(seq_lo), (seq, rw.top)
        if got is None or not icv_ok:
            continue   # an ICV failure must leave the window untouched
        assert rw.update(got)
        model.accept(got)
        assert rw.top == model.top
        # The same number again is now a replay (when anti-replay is on).
        if window:
            assert rw.check(seq_lo) is None


@st.composite
def scenario(draw, esn: bool):
    window = draw(WINDOWS)
    if esn:
        # Start just below an epoch boundary so runs cross 2^32 (or 2^33...).
        epoch = draw(st.sampled_from([1, 2, 7, 2**31, 2**32 - 1]))
        top = epoch * 2**32 - draw(st.integers(0, 2 * window + 200))
    else:
        top = draw(st.sampled_from([0, 1000, 2**32 - 3 * window - 300]))
    span = 3 * (window or 64) + 200
    offsets = draw(st.lists(st.integers(-(window or 64) - 50, span), min_size=1, max_size=120))
    jumps = draw(st.lists(st.integers(0, 2**33), max_size=3))
    seqs = [max(top + o, 0) for o in offsets] + [top + j for j in jumps]
    seqs = draw(st.permutations(seqs))
    if not esn:
        seqs = [s & SEQ32_MAX for s in seqs]
    oks = draw(st.lists(st.booleans(), min_size=len(seqs), max_size=len(seqs)))
    return window, top, list(zip(seqs, [ok or i % 4 != 0 for i, ok in enumerate(oks)], strict=True))


@settings(max_examples=300, deadline=None)
@given(scenario(esn=False))
def test_window_matches_model_without_esn(sc):
    window, top, arrivals = sc
    run(window, False, top, arrivals)


@settings(max_examples=300, deadline=None)
@given(scenario(esn=True))
def test_window_matches_model_with_esn_across_wrap(sc):
    window, top, arrivals = sc
    run(window, True, top, arrivals)


@settings(max_examples=100, deadline=None)
@given(WINDOWS, st.booleans(), st.lists(st.integers(1, 300), min_size=1, max_size=200))
def test_in_order_stream_from_start(window, esn, steps):
    # A sender that only moves forward is never rejected, from seq 1 onward.
    rw = ReplayWindow(window, esn)
    seq = 0
    for step in steps:
        seq += min(step, (window or 64))
        assert rw.check(seq & SEQ32_MAX) == seq
        assert rw.update(seq)


def test_sequence_zero_is_replay():
    for esn in (False, True):
        for window in (0, 64):
            assert ReplayWindow(window, esn).check(0) is None


def test_window_edges():
    rw = ReplayWindow(64, False)
    assert rw.update(rw.check(100))
    assert rw.check(36) is None            # top - W
    assert rw.check(37) == 37              # oldest still in the window
    assert rw.update(37)
    assert rw.check(37) is None
    assert rw.update(rw.check(5000))      # a jump clears the old marks
    assert rw.check(100) is None           # now too old
    assert rw.check(4999) == 4999


def test_update_rechecks_for_concurrent_duplicate():
    # Two copies pass the pre-check before either is authenticated: only the
    # first update wins.
    rw = ReplayWindow(32, False)
    a, b = rw.check(10), rw.check(10)
    assert a == b == 10
    assert rw.update(a)
    assert not rw.update(b)


def test_update_rejects_what_slid_out_meanwhile():
    rw = ReplayWindow(32, False)
    old = rw.check(10)
    assert rw.update(rw.check(100))
    assert not rw.update(old)


def test_esn_inference_rfc4303_appendix_a_cases():
    w = 64
    # Case A: window inside one epoch.
    rw = ReplayWindow(w, True, top=(5 << 32) | 1000)
    assert rw.check(1000 - w + 1) == (5 << 32) | (1000 - w + 1)
    assert rw.check(1000 - w) == (6 << 32) | (1000 - w)   # below the window = next epoch
    assert rw.check(SEQ32_MAX) == (5 << 32) | SEQ32_MAX
    # Case B: window straddles the epoch boundary.
    rw = ReplayWindow(w, True, top=(5 << 32) | 10)
    assert rw.check(SEQ32_MAX) == (4 << 32) | SEQ32_MAX
    assert rw.check(SEQ32_MAX - w + 12) == (4 << 32) | (SEQ32_MAX - w + 12)
    assert rw.check(11) == (5 << 32) | 11
    assert rw.check(SEQ32_MAX - w + 11) == (5 << 32) | (SEQ32_MAX - w + 11)


def test_esn_last_epoch_and_before_first():
    rw = ReplayWindow(64, True, top=SEQ64_MAX - 5)
    assert rw.check(SEQ32_MAX) == SEQ64_MAX
    assert rw.check(3) is None             # would be epoch 2^32: past the 64-bit space
    # Epoch -1 does not exist, so from a fresh window a high low-half is a jump forward.
    assert ReplayWindow(64, True).check(SEQ32_MAX) == SEQ32_MAX
    assert ReplayWindow(64, True, top=(1 << 32) + 5).check(SEQ32_MAX) == SEQ32_MAX


def test_window_off_tracks_top_only():
    rw = ReplayWindow(0, False)
    for s in (5, 5, 3, 9, 1):
        assert rw.check(s) == s
        assert rw.update(s)
    assert rw.top == 9


def test_bad_window_size():
    with pytest.raises(ValueError):
        ReplayWindow(4097)
