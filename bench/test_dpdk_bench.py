"""DPDK fastpath throughput: `ipsecgw bench dpdk` at 64/512/1400 B, outbound and inbound, CPU crypto rung.

Each cell runs the command in a child (EAL starts once per process) and records
its JSON (mpps, gbps) in extra_info.  The reference figure is DPDK's
ipsec-secgw on the same set-up, measured in the same session (docs/dpdk.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastpath.dpdk.eal import availability

ROOT = Path(__file__).resolve().parent.parent
present, why = availability()
pytestmark = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")

SECONDS = 3.0


@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("size", (64, 512, 1400))
def test_dpdk_cpu(benchmark, size: int, direction: str) -> None:
    benchmark.group = f"dpdk aes-gcm-128 {size} {direction}"
    result: dict = {}

    def once() -> None:
        r = subprocess.run([sys.executable, "-m", "control.cli", "bench", "dpdk", "--size", str(size),
                            "--direction", direction, "--crypto", "cpu", "--seconds", str(SECONDS), "--json"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        result.update(json.loads(r.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert result["mpps"] > 0 and not result["drops"]
    benchmark.extra_info.update(engine="dpdk-" + result["engine"], alg="aes-gcm-128", size=str(size),
                                direction=direction, batch=result["burst"], mpps=result["mpps"],
                                gbps=result["gbps"])
