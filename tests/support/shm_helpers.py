"""What the shared-memory tests (and bench/) share: where a throwaway region file goes, and
the environment a child process needs to import this checkout."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def region_file(fallback_dir: Path, prefix: str = "ipsecgw-test") -> Path:
    """A fresh region file name: on /dev/shm (tmpfs, like production) when it is writable."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else fallback_dir
    return base / f"{prefix}-{uuid.uuid4().hex}.shm"


def child_env() -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH, for ``python -c`` children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
