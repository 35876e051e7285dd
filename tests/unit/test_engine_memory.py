"""The batch engines keep resident memory flat: nothing is allocated per packet or per batch."""

from __future__ import annotations

import pytest

from fastpath.bench.esp import Workload
from fastpath.engines import present_names

C_ENGINES = [n for n in present_names() if n != "reference"]
PACKETS = 1_000_000


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not C_ENGINES, reason="no compiled engine present")
@pytest.mark.parametrize("direction", ("out", "in"))
@pytest.mark.parametrize("engine", C_ENGINES)
def test_rss_flat_over_a_million_packets(engine: str, direction: str) -> None:
    w = Workload(engine, "aes-gcm-128", "64", direction, batch=256)
    try:
        steps = PACKETS // w.packets_per_step
        warm = steps // 10
        for _ in range(warm):
            w.step()
        w.check()
        before = _rss_kib()
        for _ in range(steps - warm):
            w.step()
        w.check()
        after = _rss_kib()
    finally:
        w.close()
    # A leak of even 1 byte per packet would show as ~900 KiB; allow for allocator noise only.
    assert after - before < 256, f"{engine} {direction}: RSS grew {after - before} KiB over {PACKETS} packets"
