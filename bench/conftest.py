"""pytest-benchmark throughput suites (run with `make bench`, not part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tests/ on sys.path for support.* (support/shm_helpers.py: the region-file and child-environment helpers
# the shm tests use too).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))


def pytest_configure(config) -> None:
    # pyproject's addopts disable pytest-benchmark for `make test`; a run of bench/ exists to measure, and the
    # suites read benchmark.stats, which a disabled benchmark leaves empty: `pytest bench` measures without
    # having to remember --benchmark-enable
    config.option.benchmark_enable = True
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        session.disabled = False
