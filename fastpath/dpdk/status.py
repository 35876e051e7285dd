"""The DPDK worker's counters for ``ipsecgw status``: a small JSON file beside the region.

The region's counters are per SA; the worker's own (frames per port, verdicts, drops by reason) have no
place there, so the DPDK fastpath writes them here about once a second (atomically: temp file + rename)
and control reads them when asked.  Imports nothing from DPDK, so control can read without the binding.
"""

from __future__ import annotations

from typing import Any

from fastpath import status_file


def status_path(shm_path: str) -> str:
    return status_file.status_path(shm_path, "dpdk")


def write_status(shm_path: str, data: dict[str, Any]) -> None:
    status_file.write_json(status_path(shm_path), data)


def read_status(shm_path: str) -> dict[str, Any] | None:
    return status_file.read_json(status_path(shm_path))


def remove_status(shm_path: str) -> None:
    status_file.remove(status_path(shm_path))
