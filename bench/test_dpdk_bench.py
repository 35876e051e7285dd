"""DPDK fastpath throughput: `ipsecgw bench dpdk` at 64/512/1400 B, outbound and inbound, on every crypto rung.

The default (gateway) mode measures the gateway worker of ``ipsecgw run`` (io: dpdk) with a control
process attached: the region's SPD looked up per outbound packet, one AES-128-GCM tunnel CHILD SA placed
on the rung asked for, and control installing or deleting another SA every 100 ms, which the worker
applies between its slices during the measurement.  Rungs: ``crypto_aesni_gcm0`` and ``crypto_openssl0``
(lookaside cryptodev sessions), ``cpu-crypto`` (a CPU-crypto session on crypto_aesni_gcm) and ``cpu``
(the ESP core's own intel-ipsec-mb, no DPDK session).  One cell of the older one-direction loop mode
stays, so it keeps working.

Each cell runs the command in a child (EAL starts once per process) and records its JSON (mpps, gbps)
in extra_info.  The reference figure is DPDK's ipsec-secgw on the same set-up, measured in the same
session (docs/dpdk.md).
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
CRYPTO = {"crypto_aesni_gcm0": "lookaside-crypto:crypto_aesni_gcm0",
          "crypto_openssl0": "lookaside-crypto:crypto_openssl0",
          "cpu-crypto": "cpu-crypto:crypto_aesni_gcm0",
          "cpu": "software:ipsec-mb-core"}


def _bench(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "control.cli", "bench", "dpdk", *args, "--seconds", str(SECONDS),
                        "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("crypto", CRYPTO)
@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("size", (64, 512, 1400))
def test_dpdk(benchmark, size: int, direction: str, crypto: str) -> None:
    benchmark.group = f"dpdk aes-gcm-128 {size} {direction}"
    result: dict = {}

    def once() -> None:
        result.update(_bench("--size", str(size), "--direction", direction, "--crypto", crypto))

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert result["mpps"] > 0 and not result["drops"], result
    assert result["mode"] == "gateway" and result["placement"] == CRYPTO[crypto], result
    # control was live: it kept changing SAs and the worker applied them between slices while measured
    assert result["control_alive"] and result["control_sa_changes"] >= 10 and result["sa_syncs"] >= 5, result
    benchmark.extra_info.update(engine="dpdk-gw-" + result["engine"], alg="aes-gcm-128", size=str(size),
                                direction=direction, batch=result["burst"], mpps=result["mpps"],
                                gbps=result["gbps"])


def test_dpdk_loop_mode(benchmark) -> None:
    benchmark.group = "dpdk aes-gcm-128 64 out"
    result: dict = {}

    def once() -> None:
        result.update(_bench("--mode", "loop", "--size", "64", "--direction", "out", "--crypto", "crypto_aesni_gcm0"))

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert result["mode"] == "loop" and result["mpps"] > 0 and not result["drops"], result
    benchmark.extra_info.update(engine="dpdk-loop-crypto_aesni_gcm0", alg="aes-gcm-128", size="64", direction="out",
                                batch=result["burst"], mpps=result["mpps"], gbps=result["gbps"])
