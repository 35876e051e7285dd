"""What the shared-memory tests (and bench/) share: the SA they put in a region, where a throwaway region
file goes, and the environment a child process needs to import this checkout (and support.*)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from cdefs.sa import SA
from support.sa import make_sa

ROOT = Path(__file__).resolve().parents[2]


def shm_sa(spi: int, *, enc_key: bytes, enc: str = "aes-gcm-128", src: str = "192.0.2.1", dst: str = "192.0.2.2",
           **kw: Any) -> SA:
    """The region tests' SA: support.sa.make_sa with the caller's SPI, addresses and key bytes (fixed bytes
    the wiping checks look for in the region file afterwards); any other field as an override
    (``integ``/``integ_key`` included)."""
    return make_sa(enc, kw.pop("integ", None), spi=spi, src=src, dst=dst, enc_key=enc_key, **kw)


def region_file(fallback_dir: Path, prefix: str = "ipsecgw-test") -> Path:
    """A fresh region file name: on /dev/shm (tmpfs, like production) when it is writable."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else fallback_dir
    return base / f"{prefix}-{uuid.uuid4().hex}.shm"


def child_env() -> dict[str, str]:
    """os.environ with this checkout and its tests/ (for support.*) first on PYTHONPATH, for ``python -c``
    children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")))
    return env
