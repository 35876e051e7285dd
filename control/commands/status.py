"""``ipsecgw status`` as the bare daemon answers it: process, SA counts, counters, fastpath totals."""

from __future__ import annotations

import os
import time
from typing import Any

from control.commands.base import CommandFamily
from control.ctl import Handler
from control.daemon import Daemon

__all__ = ["StatusCommand", "daemon_status"]


def daemon_status(d: Daemon) -> dict[str, Any]:
    return {"pid": os.getpid(), "uptime": time.time() - d.started_wall, "control_only": d.control_only,
            "shm": d.gw.shm_path, "ike_sas": len(d.ike_sas), "child_sas": len(d.children),
            "policies": d.spd.count() if d.spd is not None else 0,
            "fastpath_alive": bool(d.region and d.region.fastpath_alive()), "counters": dict(d.stats),
            "admission": d.gate.status(), "ike": d.ike_counts.as_json(),
            "fastpath_totals": _fastpath_totals(d.gw.shm_path)}


def _fastpath_totals(shm_path: str) -> dict[str, Any] | None:
    """The gateway-wide counters the fastpath last wrote beside the region (fastpath/totals.py), with
    their age; None when no fastpath has run on this region's path yet."""
    from fastpath.totals import read_status

    st = read_status(shm_path)
    if st is None:
        return None
    tot = dict(st["totals"])
    written = st.get("written")
    tot["age"] = round(time.time() - written, 1) if isinstance(written, int | float) else None
    tot["pid"] = st.get("pid")
    return tot


class StatusCommand(CommandFamily):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {"status": lambda args, uid: daemon_status(self.daemon)}
