"""ESP throughput: every present batch engine x algorithm x size x direction x batch size,
plus the per-packet Python baseline measured in the same run.

Each benchmark round is one Workload.step() from fastpath.bench.esp (the same
work `ipsecgw bench esp` times); extra_info carries packets/s and plaintext
Gbit/s so bench/report.py can build the table and the ratios.
"""

from __future__ import annotations

import pytest

from fastpath.bench.esp import BENCH_ALGS, BENCH_SIZES, NAIVE, Workload
from fastpath.engines import present_names

BATCH_ENGINES = [n for n in present_names() if n != "reference"]   # the reference engine is per-packet Python
BATCHES = (32, 256)


def _run(benchmark, engine: str, alg: str, size: str, direction: str, batch: int) -> None:
    w = Workload(engine, alg, size, direction, batch)
    try:
        # About 0.3 s of work per cell whatever the engine speed: 2,000 packets per round for naive.
        steps = max(1, 2048 // w.packets_per_step) if engine == NAIVE else 1
        rounds = 20 if engine == NAIVE else 200

        def many() -> None:
            for _ in range(steps):
                w.step()

        benchmark.pedantic(many, setup=w.rearm, rounds=rounds, warmup_rounds=3)   # re-arm untimed
        w.check()
    finally:
        w.close()
    per_round = benchmark.stats.stats.median
    pkts = w.packets_per_step * steps
    benchmark.extra_info.update(
        engine=engine, alg=alg, size=size, direction=direction, batch=batch if engine != NAIVE else 1,
        mpps=pkts / per_round / 1e6, gbps=w.bytes_per_step * steps * 8 / per_round / 1e9)


@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("size", BENCH_SIZES)
@pytest.mark.parametrize("alg", BENCH_ALGS)
def test_naive_baseline(benchmark, alg: str, size: str, direction: str) -> None:
    benchmark.group = f"{alg} {size} {direction}"
    _run(benchmark, NAIVE, alg, size, direction, 256)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("size", BENCH_SIZES)
@pytest.mark.parametrize("alg", BENCH_ALGS)
@pytest.mark.parametrize("engine", BATCH_ENGINES)
def test_engine(benchmark, engine: str, alg: str, size: str, direction: str, batch: int) -> None:
    benchmark.group = f"{alg} {size} {direction}"
    _run(benchmark, engine, alg, size, direction, batch)
