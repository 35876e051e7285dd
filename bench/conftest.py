"""pytest-benchmark throughput suites (run with `make bench`, not part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
