"""How long a stream of probes went unanswered: the outage a fastpath restart caused."""

from __future__ import annotations

from collections.abc import Iterable


def longest_outage(sent: Iterable[int | str], got: Iterable[int], interval: float) -> float:
    """Seconds of the longest run of consecutive probes (sequence numbers sent every ``interval`` s) that got no
    answer: the outage a fastpath restart caused (tests/test_fastpath_e2e.py, bench/restart_latency.py)."""
    answered = set(got)
    run = worst = 0
    for seq in sorted(int(k) for k in sent):
        run = 0 if seq in answered else run + 1
        worst = max(worst, run)
    return worst * interval
