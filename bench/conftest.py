"""pytest-benchmark throughput suites (run with `make bench`, not part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tests/ on sys.path for support.* (support/shm_helpers.py: the region-file and child-environment helpers
# the shm tests use too).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
