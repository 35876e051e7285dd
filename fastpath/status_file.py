"""Small JSON files beside the shared-memory region that carry a fastpath's process-wide counters to
``ipsecgw status``: the gateway totals (``fastpath``), the AF_PACKET clear side (``clear``) and the DPDK
worker (``dpdk``).

The region's counters are per SA; these have no slot there.  A file is written whole to a temporary name
and renamed (a reader never sees half of one), mode 0600 like the region; a failed write only costs the
operator a fresh view, so it is reported to the caller, never raised.
"""

from __future__ import annotations

import json
import os
from typing import Any


def status_path(shm_path: str, kind: str) -> str:
    """The file of ``kind`` for the region at shm_path."""
    return f"{shm_path}.{kind}.json"


def write_json(path: str, data: dict[str, Any]) -> OSError | None:
    """Replace path with data atomically; the error, if the write failed."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:
        return exc
    return None


def read_json(path: str) -> dict[str, Any] | None:
    """The object last written to path (None if there is none, or it is unreadable)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
