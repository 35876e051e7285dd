"""What the soak samples: each gateway's processes (RSS and open fds from /proc), its SAs (control socket
and the shared-memory region) and its counters."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from support.daemon_harness import region_sas

from control.ctl import ControlError, call


def proc_usage(pid: int) -> tuple[int, int] | None:
    """(RSS in bytes, open fds) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


def gateway_sample(sock: Path, shm: Path) -> dict[str, Any]:
    """One look at one gateway: processes (pid, restarts, rss, fds), SA counts, drop counters."""
    t = time.monotonic()
    try:
        st = call(str(sock), "status", timeout=5)
        sas = call(str(sock), "list-sas", timeout=5)
    except (ControlError, OSError) as exc:
        return {"t": t, "error": str(exc)}
    procs = {}
    for name, p in (st.get("processes") or {}).items():
        pid = p.get("pid")
        use = proc_usage(pid) if pid else None
        procs[name] = {"pid": pid, "restarts": p.get("restarts", 0), "rss": use[0] if use else None,
                       "fds": use[1] if use else None}
    children = [c for ike in sas for c in ike.get("children", [])]
    fp = st.get("fastpath_totals") or {}
    return {
        "t": t,
        "processes": procs,
        # half-open responder SAs (a flood's, until half_open_timeout) are counted apart from the IKE SAs
        "ike_listed": len(sas),
        "ike_sas": len(sas) - int((st.get("admission") or {}).get("half_open") or 0),
        "ike_established": sum(1 for ike in sas if ike.get("state") == "ESTABLISHED"),
        "child_sas": len(children),
        "child_installed": sum(1 for c in children if c.get("state") == "INSTALLED"),
        "region_sas": len(region_sas(shm)),
        "half_open": int((st.get("admission") or {}).get("half_open") or 0),
        "admission": (st.get("admission") or {}).get("counters") or {},
        "counters": st.get("counters") or {},
        "fastpath": {"inbound": fp.get("inbound") or {}, "outbound": fp.get("outbound") or {}},
        "spi_in": next((c["spi_in"] for c in children if c.get("state") == "INSTALLED"), None),
    }
