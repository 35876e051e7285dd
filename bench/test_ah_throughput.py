"""AH throughput: each present batch engine x AH algorithm x size x direction, next to ESP with the same
integrity measured in the same run (ESP-NULL with HMAC-SHA2-256, ESP-GMAC), which is AH's baseline: the
same authentication over (nearly) the same bytes, without AH's copy and zeroing of the outer header.

Each round is one Workload.step() of fastpath.bench.esp (``ipsecgw bench esp --alg ah-...`` times the
same work); bench/report.py puts AH against its ESP baseline (``vs_esp``)."""

from __future__ import annotations

import pytest

from fastpath.bench.esp import Workload
from fastpath.engines import present_names

ENGINES = [n for n in present_names() if n != "reference"]
# AH algorithm -> its ESP baseline (None: ESP has no NULL cipher with HMAC-SHA1-96 here)
AH_ALGS = {"ah-hmac-sha256-128": "null-hmac-sha256-128", "ah-aes-gmac-128": "aes-gmac-128",
           "ah-hmac-sha1-96": None}
SIZES = ("64", "1400")
CELLS = [*AH_ALGS, *sorted({b for b in AH_ALGS.values() if b})]


@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("alg", CELLS)
@pytest.mark.parametrize("engine", ENGINES)
def test_ah_engine(benchmark, engine: str, alg: str, size: str, direction: str) -> None:
    benchmark.group = f"ah {alg.removeprefix('ah-')} {size} {direction}"
    w = Workload(engine, alg, size, direction, 256)
    try:
        benchmark.pedantic(w.step, setup=w.rearm, rounds=1000, warmup_rounds=10)
        w.check()                       # every packet of every step verified or was protected
    finally:
        w.close()
    per_round = benchmark.stats.stats.median
    benchmark.extra_info.update(engine=engine, alg=alg, size=size, direction=direction, batch=256,
                                mpps=w.packets_per_step / per_round / 1e6,
                                gbps=w.bytes_per_step * 8 / per_round / 1e9,
                                esp_baseline=AH_ALGS.get(alg))
