"""Throughput measurement of one ESP cell: engine x algorithm x packet size x direction.

Shared by ``ipsecgw bench esp`` and the pytest-benchmark suite in bench/, so a
number from the command line and a number from ``make bench`` mean the same.

What one *step* does, and therefore what a figure includes:
- engines: load one batch of packets into the batch buffer (a copy of each
  slot's packet bytes, as a receive into a warm ring would do), then one
  engine call over the batch.  Both directions load the same way, from
  ``rounds`` saved buffers in turn.  By default as many as fit in about
  256 KiB (8 at 64 bytes, 1 at 1400): the source stays in cache, as a NIC's
  DMA into the last-level cache leaves it, and cold copies (which cost both
  directions alike) do not swamp the ESP work; inbound's buffers hold pre-encrypted
  packets with rising sequence numbers, and the SA is re-installed once per
  cycle (``rearm``, outside the timed region) so anti-replay stays on and
  never rejects.
- naive: the per-packet Python loop of fastpath.bench.naive over the same packets.
Every step's statuses are checked afterwards: a cell whose packets were
dropped is an error, never a fast figure.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction
from fastpath.batch import Batch
from fastpath.bench.naive import NaiveESP
from fastpath.bench.traffic import packets
from fastpath.engines import create

BENCH_ALGS = ("aes-gcm-128", "aes-gcm-256", "chacha20-poly1305", "aes-cbc-128-hmac-sha256-128")
BENCH_SIZES = ("64", "512", "1400", "imix")
NAIVE = "naive"
CACHE_BUDGET = 256 * 1024   # bytes of saved packets the default rounds keep (see the docstring)


AH_PREFIX = "ah-"     # 'ah-hmac-sha256-128': an AH SA with that integrity algorithm instead of ESP


def parse_alg(name: str) -> tuple[str, str | None]:
    """'aes-gcm-128' -> (aes-gcm-128, None); 'aes-cbc-128-hmac-sha256-128' -> (aes-cbc-128, hmac-sha256-128);
    'ah-aes-gmac-128' -> (null, aes-gmac-128), an AH SA."""
    if name.startswith(AH_PREFIX) and name[len(AH_PREFIX):] in AH_INTEG_ALGS:
        return "null", name[len(AH_PREFIX):]
    if name in ENC_ALGS and ENC_ALGS[name].aead:
        return name, None
    enc, sep, integ = name.partition("-hmac-")
    if sep and enc in ENC_ALGS and not ENC_ALGS[enc].aead and "hmac-" + integ in INTEG_ALGS:
        return enc, "hmac-" + integ
    choices = [n for n, a in ENC_ALGS.items() if a.aead] + [
        f"{c}-{i}" for c, a in ENC_ALGS.items() if not a.aead for i in INTEG_ALGS] + [
        AH_PREFIX + i for i in AH_INTEG_ALGS]
    raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(choices)}")


def bench_sa(alg: str, seq: int = 1) -> SA:
    enc, integ = parse_alg(alg)
    if alg.startswith(AH_PREFIX):
        assert integ is not None
        return SA(spi=0x1000, src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
                  enc="null", enc_key=b"", integ=integ, integ_key=os.urandom(AH_INTEG_ALGS[integ].key_len),
                  seq=seq, replay_window=64, proto="ah")
    return SA(spi=0x1000, src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
              enc=enc, enc_key=os.urandom(ENC_ALGS[enc].config_key_len), integ=integ,
              integ_key=os.urandom(INTEG_ALGS[integ].key_len) if integ else b"", seq=seq, replay_window=64)


@dataclass
class CellResult:
    engine: str
    alg: str
    size: str
    direction: str
    batch: int
    packets: int
    seconds: float
    mpps: float
    gbps: float            # plaintext (inner packet) Gbit/s

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return (f"{self.engine} {self.alg} {self.size} B {self.direction}: {self.mpps:.3f} Mpps, {self.gbps:.2f} "
                f"Gbit/s ({self.packets} packets in {self.seconds:.2f} s, batch {self.batch})")


class Workload:
    """Prepared state for one cell; ``step()`` processes ``packets_per_step`` packets."""

    def __init__(self, engine: str, alg: str, size: str | int, direction: str, batch: int = 256,
                 rounds: int | None = None):
        if direction not in ("out", "in"):
            raise ValueError("direction must be out or in")
        self.engine_name, self.alg, self.size, self.direction = engine, alg, str(size), direction
        self.inner = packets(self.size, batch)
        self.packets_per_step = batch
        self.bytes_per_step = sum(len(p) for p in self.inner)
        self.sa = bench_sa(alg)
        if engine == NAIVE and self.sa.is_ah:
            raise ValueError(f"{alg}: the {NAIVE} baseline is ESP only")
        if engine == NAIVE:
            self._setup_naive()
        else:
            if rounds is None:
                rounds = max(1, min(8, CACHE_BUDGET // self.bytes_per_step))
            self._setup_engine(batch, rounds)

    # -- naive per-packet Python ------------------------------------------------
    def _setup_naive(self) -> None:
        self._stale = False
        self.naive = NaiveESP(self.sa)
        if self.direction == "in":
            tx = NaiveESP(self.sa)
            self.esp = [tx.encrypt(p) for p in self.inner]
            self.step = self._naive_in
        else:
            self.step = self._naive_out

    def _naive_out(self) -> None:
        enc = self.naive.encrypt
        self.last = [enc(p) for p in self.inner]

    def _naive_in(self) -> None:
        self.naive.highest = self.naive.window = 0   # the same packets again: a fresh window, as the engines get
        dec = self.naive.decrypt
        self.last = [dec(p) for p in self.esp]

    # -- batch engines ------------------------------------------------------------
    def _setup_engine(self, batch: int, rounds: int) -> None:
        self.engine = create(self.engine_name, capacity=4)
        mtu = max(len(p) for p in self.inner) + 64
        self.batch = Batch(capacity=batch, mtu=mtu)
        b = self.batch
        if self.direction == "out":
            self.engine.add_sa(0, self.sa, Direction.OUT)
            b.extend(self.inner)
            snaps = [self._snapshot() for _ in range(rounds)]
        else:
            tx = create(self.engine_name, capacity=1)
            tx.add_sa(0, self.sa, Direction.OUT)
            snaps = []
            for _ in range(rounds):
                b.clear()
                b.extend(self.inner)
                tx.outbound(b)
                self._require_ok("preparing inbound packets")
                snaps.append(self._snapshot())
            tx.close()
            self.engine.add_sa(0, self.sa, Direction.IN)
        # Both directions load each step from one of `rounds` distinct buffers, so
        # neither gets a cache advantage; only each slot's packet bytes are copied.
        rel = [s[1] - np.arange(b.capacity, dtype=np.int64) * b.slot_size for s in snaps]
        lo = int(min(r.min() for r in rel))
        hi = int(max((r + s[2]).max() for r, s in zip(rel, snaps, strict=True)))
        self.span = slice(lo, hi)
        self.view = b.buf.reshape(b.capacity, b.slot_size)
        self.saved = [(rows[:, self.span].copy(), off, ln) for rows, off, ln in snaps]
        self.round = 0
        self._stale = False
        self.step = self._engine_step

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = self.batch
        return b.buf.reshape(b.capacity, b.slot_size).copy(), b.off.copy(), b.len.copy()

    def rearm(self) -> None:
        """Between timed steps: after a full cycle the inbound SA is re-installed, since the same sequence
        numbers come again and anti-replay (on, as in service) would reject them.  Real traffic never needs
        this, so the harnesses call it outside the timed region; ``step`` calls it itself otherwise."""
        if self._stale:
            self._stale = False
            self.engine.remove_sa(0)
            self.engine.add_sa(0, self.sa, Direction.IN)

    def _engine_step(self) -> None:
        if self._stale:
            self.rearm()
        rows, off, ln = self.saved[self.round]
        b = self.batch
        np.copyto(self.view[:, self.span], rows)
        np.copyto(b.off, off)
        np.copyto(b.len, ln)
        b.n = self.packets_per_step
        self.round += 1
        if self.direction == "out":
            self.engine.outbound(b)
            if self.round == len(self.saved):
                self.round = 0
        else:
            self.engine.inbound(b)
            if self.round == len(self.saved):
                self.round = 0
                self._stale = True      # same sequence numbers next cycle: see rearm()

    def warm(self) -> None:
        """A few untimed steps (caches, lazily built state), then the statuses checked."""
        for _ in range(3):
            self.step()
        self.check()

    def timed_step(self) -> int:
        """One step in nanoseconds, its ``rearm`` left outside the timed region."""
        self.rearm()
        t0 = time.perf_counter_ns()
        self.step()
        return time.perf_counter_ns() - t0

    def _require_ok(self, what: str) -> None:
        st = self.batch.status[: self.batch.n]
        if st.any():
            raise RuntimeError(f"{self.engine_name} {self.alg} {self.size}: {int(np.count_nonzero(st))} packets "
                               f"not OK while {what} (statuses {sorted(set(st.tolist()))})")

    def check(self) -> None:
        """Raise if the last step dropped anything."""
        if self.engine_name == NAIVE:
            if any(p is None for p in self.last):
                raise RuntimeError("naive baseline dropped packets")
        else:
            self._require_ok("measuring")

    def close(self) -> None:
        if self.engine_name != NAIVE:
            self.engine.close()


@dataclass
class DirectionComparison:
    """Inbound against outbound for one cell, from many short paired samples (``compare_directions``)."""

    engine: str
    alg: str
    size: str
    batch: int
    pairs: int
    out_mpps: float         # from each direction's fastest sample (the least disturbed run of the code)
    in_mpps: float
    median: float           # median over pairs of in rate / out rate - 1
    q1: float               # ... and its quartiles
    q3: float

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return (f"{self.engine} {self.alg} {self.size} B: inbound {self.median:+.1%} against outbound (median of "
                f"{self.pairs} pairs, quartiles {self.q1:+.1%} .. {self.q3:+.1%}); fastest samples out "
                f"{self.out_mpps:.3f} Mpps, in {self.in_mpps:.3f} Mpps, batch {self.batch}")


def compare_directions(engine: str, alg: str, size: str | int, batch: int = 256, pairs: int = 300,
                       steps: int = 4) -> DirectionComparison:
    """Inbound against outbound, robust to a shared host's noise.

    Two long cells run one after the other, so a neighbour's burst can land on one direction only (on
    this VM single cells moved by a third within a minute).  Here each pair times ``steps`` steps of one
    direction right next to ``steps`` of the other (well under a millisecond each at 256 packets; the
    order alternates between pairs), so both halves of a pair see the same host; the median of the
    pairs' ratios is the figure.  The fastest sample of each direction is reported as well."""
    w = {d: Workload(engine, alg, size, d, batch) for d in ("out", "in")}
    times: dict[str, list[int]] = {"out": [], "in": []}
    try:
        for wl in w.values():
            wl.warm()
        for i in range(pairs):
            for d in (("out", "in") if i % 2 == 0 else ("in", "out")):
                times[d].append(sum(w[d].timed_step() for _ in range(steps)))
        for wl in w.values():
            wl.check()
    finally:
        for wl in w.values():
            wl.close()
    ratios = np.array(times["out"], dtype=np.float64) / np.array(times["in"], dtype=np.float64) - 1.0
    q1, med, q3 = (float(x) for x in np.percentile(ratios, [25, 50, 75]))
    pkts = steps * w["out"].packets_per_step
    return DirectionComparison(engine, alg, str(size), batch, pairs, pkts / min(times["out"]) * 1e3,
                               pkts / min(times["in"]) * 1e3, med, q1, q3)


def measure(engine: str, alg: str, size: str | int, direction: str, batch: int = 256,
            seconds: float = 2.0) -> CellResult:
    """Run one cell for about ``seconds`` and return its rate."""
    w = Workload(engine, alg, size, direction, batch)
    try:
        w.warm()
        steps = 0
        elapsed_ns = 0
        deadline = time.perf_counter() + seconds
        while True:
            elapsed_ns += w.timed_step()
            steps += 1
            if time.perf_counter() >= deadline:
                break
        w.check()
        elapsed = elapsed_ns / 1e9
    finally:
        w.close()
    pkts = steps * w.packets_per_step
    return CellResult(engine, alg, str(size), direction, batch, pkts, elapsed, pkts / elapsed / 1e6,
                      steps * w.bytes_per_step * 8 / elapsed / 1e9)
