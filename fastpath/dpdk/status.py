"""The DPDK worker's counters for ``ipsecgw status``: a small JSON file beside the region.

The region's counters are per SA; the worker's own (frames per port, verdicts, drops by reason) have no
place there, so the DPDK fastpath writes them here about once a second (atomically: temp file + rename)
and control reads them when asked.  Imports nothing from DPDK, so control can read without the binding.
"""

from __future__ import annotations

import json
import os
from typing import Any


def status_path(shm_path: str) -> str:
    return f"{shm_path}.dpdk.json"


def write_status(shm_path: str, data: dict[str, Any]) -> None:
    path = status_path(shm_path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def read_status(shm_path: str) -> dict[str, Any] | None:
    try:
        with open(status_path(shm_path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_status(shm_path: str) -> None:
    try:
        os.unlink(status_path(shm_path))
    except OSError:
        pass
