"""``ipsecgw status`` as ``ipsecgw run`` answers it: the bare daemon's status plus processes (from the
supervisor's state file), I/O mode, engines, connections, adopted SAs and totals summed from the
fastpath's per-SA counters in the region."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from control.commands.base import CommandFamily
from control.commands.status import daemon_status
from control.ctl import Handler
from control.daemon import Daemon
from control.fastpath_view import FastpathView
from control.supervisor import STATE_ENV

__all__ = ["GatewayStatus"]


class GatewayStatus(CommandFamily):
    def __init__(self, daemon: Daemon, view: FastpathView, config_path: str | None, reloads: Callable[[], int]):
        self.daemon, self.view, self.config_path, self.reloads = daemon, view, config_path, reloads

    def handlers(self) -> dict[str, Handler]:
        return {"status": self.status}

    def _processes(self) -> dict[str, Any]:
        d = self.daemon
        now = time.time()
        procs: dict[str, Any] = {}
        sup = None
        path = os.environ.get(STATE_ENV)
        if path:
            try:
                with open(path) as f:
                    sup = json.load(f)
            except (OSError, ValueError):
                sup = None
        if sup is not None:
            s = sup.get("supervisor", {})
            procs["supervisor"] = {"pid": s.get("pid"), "uptime": round(now - s.get("started", now), 1),
                                   "restarts": 0, "running": True}
            for name, p in sup.get("processes", {}).items():
                procs[name] = {"pid": p.get("pid"), "uptime": round(now - p["started"], 1) if p.get("started")
                               else None, "restarts": p.get("restarts", 0), "last_exit": p.get("last_exit"),
                               "running": p.get("running")}
        procs["control"] = {**procs.get("control", {"restarts": 0}), "pid": os.getpid(), "running": True,
                            "uptime": round(now - d.started_wall, 1)}
        hdr = d.region.hdr if d.region is not None else None
        if hdr is not None:
            hb = int(hdr.fastpath_heartbeat_ns)
            fp = procs.setdefault("fastpath", {"restarts": 0, "uptime": None})
            age = (time.monotonic_ns() - hb) / 1e9 if hb else None
            fp["heartbeat_age"] = round(age, 2) if age is not None else None
            fp["alive"] = age is not None and age < 2.0
            if not fp.get("pid") and hdr.fastpath_pid and fp["alive"]:
                fp["pid"] = int(hdr.fastpath_pid)
            fp.setdefault("running", fp["alive"])
        return procs

    def status(self, args: dict[str, Any], uid: int) -> dict[str, Any]:
        d = self.daemon
        base = daemon_status(d)
        software = self.view.software()
        fp = d.gw.fastpath
        best = software[0].name if software else "-"
        base.update({
            "mode": "control-only" if d.control_only else "gateway",
            "config": self.config_path,
            "processes": self._processes(),
            "io": {"mode": fp.io, "tun": fp.tun, "outer_mtu": fp.outer_mtu, "ike_port": d.gw.ike_port,
                   "natt_port": d.gw.natt_port},
            "engines": {"configured": fp.engine, "used": best if fp.engine == "best" else fp.engine,
                        "present": [s.name for s in software]},
            "connections": list(d.config.connections),
            "adopted_sas": len(self.view.adoption.adopted_sas),
            "totals": self.view.totals(),
            "reloads": self.reloads(),
        })
        if d.region is not None:
            base["events_dropped"] = int(d.region.events_dropped)
        if fp.clear == "af_packet":      # the clear side through AF_PACKET: its counters, as the fastpath left them
            from fastpath.io.afpacket import read_status

            base["io"].update({"clear": fp.clear, "clear_interface": fp.clear_interface,
                               "af_packet": read_status(d.gw.shm_path)})
        if fp.io == "dpdk" and fp.dpdk is not None:     # the DPDK worker: its ports and counters (fastpath/dpdk)
            from fastpath.dpdk.status import read_status as read_dpdk

            dp = read_dpdk(d.gw.shm_path) or {}
            base["engines"]["used"] = ", ".join(dp.get("engines_used") or []) or "dpdk"
            base["io"].update({"clear_port": fp.dpdk.clear_port, "protected_port": fp.dpdk.protected_port,
                               "clear_interface": fp.dpdk.clear_interface,
                               "protected_interface": fp.dpdk.protected_interface,
                               "dpdk": dp or None})
        return base
