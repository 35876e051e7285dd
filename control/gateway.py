"""The control process as ``ipsecgw run`` runs it: the IKE daemon plus the operator's view of the gateway.

``GatewayDaemon`` extends ``control.daemon.Daemon`` with:

- ``status``: processes (from the supervisor's state file), I/O mode, engines, SA and policy counts, and
  totals summed from the fastpath's per-SA counters in the region;
- ``list-sas``: each CHILD SA also gets its engine and placement (``fastpath.placement.place`` over the
  software engines present, since kernel I/O has no offload), and packet/byte counters and drops by
  reason per direction, read from the region's counters;
- ``list-policies``: the SPD entries control installed, with what they are bound to;
- ``reload``: re-read the configuration file and apply it without touching what did not change: new
  connections are added (traps installed, ``start`` children initiated), removed ones are terminated
  (Deletes sent), changed ones are terminated and added again, unchanged ones keep their SAs;
- **adoption after a restart** (supervised mode only): a control process that finds SAs in the region
  (its predecessor crashed) keeps them and their policies, so the fastpath keeps forwarding, and
  renegotiates the children they belong to.  Once a child is up again its adopted policies go; the
  adopted SAs follow a few seconds later (packets in flight), or after ``ADOPT_GRACE`` at the latest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import subprocess
import time
from typing import Any

from cdefs.sa import Direction
from control.config import Config, ConfigError, ConnectionConfig, load_config
from control.ctl import CommandError
from control.daemon import PRIO_INSTALLED, PRIO_TRAP, ChildEntry, Daemon, run_until_signal
from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy
from control.supervisor import STATE_ENV
from control.ts_policies import policies_for as _policies_for
from fastpath.status import Status

__all__ = ["GatewayDaemon", "run_gateway"]

log = logging.getLogger("ipsecgw.daemon")

ADOPT_OVERLAP = 5.0         # adopted SAs stay this long after their child is renegotiated (packets in flight)
ADOPT_GRACE = 60.0          # ... and no longer than this after the restart in any case
REKEYED_INBOUND_DELAY = 3.0  # a rekeyed CHILD SA's inbound SA outlives the peer's Delete this long (as
                             # strongSwan's delete_rekeyed_delay): packets sent on it just before still arrive
_ACTIONS = {PROTECT: "protect", BYPASS: "bypass", DISCARD: "discard"}


def _counters_json(stats: Any) -> dict[str, Any]:
    return {"packets": int(stats.packets), "bytes": int(stats.bytes),
            "drops": {Status(k).label: int(v) for k, v in stats.drops.items() if v}}


def _sel(p: Policy) -> tuple:
    return (str(ipaddress.ip_network(p.src)), str(ipaddress.ip_network(p.dst)), p.proto, tuple(p.sport),
            tuple(p.dport))


class GatewayDaemon(Daemon):
    """The control process with the gateway's operator commands (see the module docstring)."""

    rekeyed_inbound_delay = REKEYED_INBOUND_DELAY

    def __init__(self, config: Config, *, config_path: str | None = None, supervised: bool = False):
        super().__init__(config, control_only=not supervised)
        self.config_path = config_path
        self.supervised = supervised
        self.adopted_sas: dict[int, tuple[Any, Direction, int]] = {}    # slot -> (SA, direction, sa id)
        self.adopted_policies: dict[tuple[str, str] | None, list[int]] = {}
        self._adopt_handle: asyncio.TimerHandle | None = None
        self._placement_cache: dict[tuple[int, int], tuple[str, str]] = {}
        self._software: tuple | None = None
        self.reloads = 0

    # -- start, adoption ---------------------------------------------------------------------------

    def _open_region(self) -> None:
        path = self.gw.shm_path
        if not self.supervised or not os.path.exists(path):
            super()._open_region()
            return
        region = ControlRegion.attach(path)
        rec = region.reconcile()
        self.region = region
        traps = 0
        for index, pol in rec.policies.items():
            if pol.priority > PRIO_INSTALLED:       # a trap: the new traps replace it
                region.delete_policy(index, commit=False)
                traps += 1
                continue
            key = self._key_of(pol)
            self.adopted_policies.setdefault(key, []).append(index)
        stale = self.adopted_policies.pop(None, [])
        for index in stale:                 # bound to a child that is no longer configured
            region.delete_policy(index, commit=False)
        region.commit_policies()
        self.adopted_sas = dict(rec.sas)
        log.info("attached to existing region %s: adopted %d SA(s) and %d policy(ies) of a previous control "
                 "process (they keep forwarding until renegotiated)%s%s", path, len(self.adopted_sas),
                 sum(len(v) for v in self.adopted_policies.values()),
                 f", removed {traps + len(stale)} trap/stale policy(ies)" if traps or stale else "",
                 f", repaired {rec.repaired} torn record(s)" if rec.repaired else "")

    def _key_of(self, pol: Policy) -> tuple[str, str] | None:
        sel = _sel(pol)
        for conn in self.config.connections.values():
            for spec in conn.children:
                if any(_sel(p) == sel for p in _policies_for(spec.local_ts, spec.remote_ts, PRIO_INSTALLED)):
                    return conn.name, spec.name
        return None

    async def start(self) -> None:
        await super().start()
        assert self._ctl is not None
        self._ctl.handlers.update({"status": self._cmd_gw_status, "list-policies": self._cmd_list_policies,
                                   "reload": self._cmd_reload})
        if self.adopted_sas or self.adopted_policies:
            assert self._loop is not None
            self._adopt_handle = self._loop.call_later(ADOPT_GRACE, self._adopt_expired)
            for conn_name, child_name in [k for k in self.adopted_policies if k is not None]:
                conn = self.config.connections[conn_name]
                spec = self._spec(conn, child_name)
                if spec is None:
                    continue
                if conn.can_initiate:
                    self.bring_up(conn, spec, "renegotiating after a control restart")
                else:
                    log.info("%s/%s: adopted SAs stay until the peer renegotiates (at most %.0f s)", conn_name,
                             child_name, ADOPT_GRACE)
            if not self.adopted_policies:
                self._schedule_adopted_removal()

    def _install_child(self, entry: Any, ev: Any) -> None:
        super()._install_child(entry, ev)
        key = (entry.conn.name, ev.name)
        idx = self.adopted_policies.pop(key, None)
        if idx and self.region is not None:
            for index in idx:
                try:
                    self.region.delete_policy(index, commit=False)
                except KeyError:
                    pass
            self.region.commit_policies()
            log.info("%s/%s renegotiated: %d adopted policy(ies) removed", key[0], key[1], len(idx))
            if not self.adopted_policies:
                self._schedule_adopted_removal()

    def _schedule_adopted_removal(self) -> None:
        if self._loop is not None and self.adopted_sas:
            self._loop.call_later(ADOPT_OVERLAP, self._remove_adopted, "renegotiated")

    def _adopt_expired(self) -> None:
        self._adopt_handle = None
        if self.adopted_policies or self.adopted_sas:
            self._remove_adopted(f"not renegotiated within {ADOPT_GRACE:.0f} s")

    def _remove_adopted(self, why: str) -> None:
        if self.region is None:
            return
        n_pol = 0
        for idx in self.adopted_policies.values():
            for index in idx:
                try:
                    self.region.delete_policy(index, commit=False)
                    n_pol += 1
                except KeyError:
                    pass
        self.adopted_policies.clear()
        if n_pol:
            self.region.commit_policies()
        n = 0
        for slot in list(self.adopted_sas):
            try:
                self.region.delete_sa(slot)
                n += 1
            except KeyError:
                pass
        self.adopted_sas.clear()
        if n or n_pol:
            log.info("removed %d adopted SA(s) and %d adopted policy(ies) (%s)", n, n_pol, why)
        if self._adopt_handle is not None:
            self._adopt_handle.cancel()
            self._adopt_handle = None

    async def shutdown(self) -> None:
        self._remove_adopted("shutdown")
        await super().shutdown()

    # -- list-sas: engine, placement, counters ------------------------------------------------------

    def _placement(self, slot: int, sa_id: int) -> tuple[str, str]:
        """(engine, placement) for one SA slot; placement is a pure function, so cache it per SA."""
        got = self._placement_cache.get((slot, sa_id))
        if got is not None:
            return got
        from fastpath.placement import place, present_software

        if self._software is None:
            self._software = present_software()
        assert self.region is not None
        found = self.region.sa(slot)
        if found is None:
            return "-", "-"
        sa, direction, _ = found
        pl = place(sa, direction, None, self._software)
        cand = pl.engine
        want = self.gw.fastpath.engine
        engine = (cand.device if cand else "-") if want == "best" else want
        got = (engine, str(cand) if cand else "none")
        if self.gw.fastpath.io == "dpdk":
            # the DPDK fastpath places each SA on the devices it discovered and reports it in its status file
            dp = self._dpdk_placement(slot, sa.spi)
            if dp is None:
                return "-", "pending (the DPDK fastpath has not reported this SA yet)"
            got = (dp.get("label") or "-", dp.get("engine") or "none")
        if len(self._placement_cache) > 4 * self.region.caps.n_sa:
            self._placement_cache.clear()
        self._placement_cache[(slot, sa_id)] = got
        return got

    def _dpdk_placement(self, slot: int, spi: int) -> dict[str, Any] | None:
        """The DPDK fastpath's placement of a slot (fastpath/dpdk/daemon.py writes it), if it is this SA's."""
        from fastpath.dpdk.status import read_status as read_dpdk

        got = ((read_dpdk(self.gw.shm_path) or {}).get("placements") or {}).get(str(slot))
        return got if got is not None and got.get("spi") == spi else None

    def _placement_reasons(self, slot: int) -> list[str]:
        """io dpdk: why the SA is not on a better rung (each engine skipped or fallen back from)."""
        found = self.region.sa(slot) if self.region is not None and slot >= 0 else None
        dp = self._dpdk_placement(slot, found[0].spi) if found is not None else None
        return [f"{s['engine']}: {s['reason']}" for s in (dp or {}).get("skipped", [])
                if not s["engine"].endswith(":-")]

    def _slot_counters(self, slot: int, sa_id: int) -> dict[str, Any] | None:
        if slot < 0 or self.region is None:
            return None
        c = self.region.counters(slot)
        if c is None or c.sa_id != sa_id:
            return {"packets": 0, "bytes": 0, "drops": {}}
        return _counters_json(c.stats)

    def _child_json(self, c: ChildEntry, now: float, wall: float) -> dict[str, Any]:
        out = super()._child_json(c, now, wall)
        engine, placement = self._placement(c.slot_in, c.id_in)
        out["engine"], out["placement"] = engine, placement
        if self.gw.fastpath.io == "dpdk":
            out["placement_out"] = self._placement(c.slot_out, c.id_out)[1] if c.slot_out >= 0 else None
            out["placement_skipped"] = self._placement_reasons(c.slot_in)
        out["counters"] = {"in": self._slot_counters(c.slot_in, c.id_in),
                           "out": self._slot_counters(c.slot_out, c.id_out)}
        return out

    def _cmd_list_sas(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        out = super()._cmd_list_sas(args, uid)
        if self.adopted_sas:
            kids = []
            for slot, (sa, direction, sa_id) in sorted(self.adopted_sas.items()):
                engine, placement = self._placement(slot, sa_id)
                kids.append({"slot": slot, "spi": f"{sa.spi:08x}", "direction": direction.name.lower(),
                             "proposal": sa.enc, "engine": engine, "placement": placement,
                             "counters": self._slot_counters(slot, sa_id)})
            out.append({"name": None, "state": "ADOPTED", "children": [], "adopted": kids})
        return out

    # -- status ---------------------------------------------------------------------------------------

    def _processes(self) -> dict[str, Any]:
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
                            "uptime": round(now - self.started_wall, 1)}
        hdr = self.region.hdr if self.region is not None else None
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

    def _totals(self) -> dict[str, Any]:
        tot: dict[str, Any] = {"in": {"packets": 0, "bytes": 0, "drops": {}},
                               "out": {"packets": 0, "bytes": 0, "drops": {}}}
        slots = [(c.slot_in, c.id_in, "in") for c in self.children]
        slots += [(c.slot_out, c.id_out, "out") for c in self.children if c.slot_out >= 0]
        slots += [(s, v[2], "in" if v[1] == Direction.IN else "out") for s, v in self.adopted_sas.items()]
        for slot, sa_id, d in slots:
            c = self._slot_counters(slot, sa_id)
            if c is None:
                continue
            t = tot[d]
            t["packets"] += c["packets"]
            t["bytes"] += c["bytes"]
            for k, v in c["drops"].items():
                t["drops"][k] = t["drops"].get(k, 0) + v
        return tot

    def _cmd_gw_status(self, args: dict[str, Any], uid: int) -> dict[str, Any]:
        from fastpath.placement import present_software

        base = self._cmd_status(args, uid)
        if self._software is None:
            self._software = present_software()
        fp = self.gw.fastpath
        best = self._software[0].name if self._software else "-"
        base.update({
            "mode": "control-only" if self.control_only else "gateway",
            "config": self.config_path,
            "processes": self._processes(),
            "io": {"mode": fp.io, "tun": fp.tun, "outer_mtu": fp.outer_mtu, "ike_port": self.gw.ike_port,
                   "natt_port": self.gw.natt_port},
            "engines": {"configured": fp.engine, "used": best if fp.engine == "best" else fp.engine,
                        "present": [s.name for s in self._software]},
            "connections": list(self.config.connections),
            "adopted_sas": len(self.adopted_sas),
            "totals": self._totals(),
            "reloads": self.reloads,
        })
        if self.region is not None:
            base["events_dropped"] = int(self.region.events_dropped)
        if fp.clear == "af_packet":      # the clear side through AF_PACKET: its counters, as the fastpath left them
            from fastpath.io.afpacket import read_status

            base["io"].update({"clear": fp.clear, "clear_interface": fp.clear_interface,
                               "af_packet": read_status(self.gw.shm_path)})
        if fp.io == "dpdk" and fp.dpdk is not None:     # the DPDK worker: its ports and counters (fastpath/dpdk)
            from fastpath.dpdk.status import read_status as read_dpdk

            dp = read_dpdk(self.gw.shm_path) or {}
            base["engines"]["used"] = ", ".join(dp.get("engines_used") or []) or "dpdk"
            base["io"].update({"clear_port": fp.dpdk.clear_port, "protected_port": fp.dpdk.protected_port,
                               "clear_interface": fp.dpdk.clear_interface,
                               "protected_interface": fp.dpdk.protected_interface,
                               "dpdk": dp or None})
        return base

    # -- list-policies ----------------------------------------------------------------------------------

    def _cmd_list_policies(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        assert self.region is not None
        out = []

        def entry(index: int, conn: str | None, child: str | None, bound: str, sas: list[int]) -> dict[str, Any]:
            try:
                p = self.region.policy(index)
            except KeyError:
                return {}
            return {"index": index, "connection": conn, "child": child, "src": p.src, "dst": p.dst,
                    "proto": p.proto, "sport": list(p.sport), "dport": list(p.dport),
                    "action": _ACTIONS.get(p.action, str(p.action)), "priority": p.priority, "state": bound,
                    "sa_slots": sas}

        for (conn, child), idx in sorted(self.policies.items()):
            live = self._child_up(conn, child)
            if live is not None and live.slot_out >= 0:
                bound, sas = f"SPI 0x{live.spi_out:08x}", [live.slot_out]
            else:
                bound, sas = "trap (ACQUIRE on match)", []
            for index in idx:
                e = entry(index, conn, child, bound, sas)
                if e:
                    out.append(e)
        for key, idx in self.adopted_policies.items():
            for index in idx:
                e = entry(index, key[0] if key else None, key[1] if key else None, "adopted (previous control)",
                          [])
                if e:
                    out.append(e)
        return sorted(out, key=lambda e: (e["priority"], e["index"]))

    # -- reload -----------------------------------------------------------------------------------------

    async def _cmd_reload(self, args: dict[str, Any], uid: int) -> dict[str, Any]:
        if not self.config_path:
            raise CommandError("this daemon was not started from a file; nothing to reload")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            raise CommandError("configuration not reloaded:\n" + "\n".join(exc.problems)) from None
        result = await self.apply_config(new)
        self.reloads += 1
        return result

    async def apply_config(self, new: Config) -> dict[str, Any]:
        """Make the running connections those of ``new``; unchanged connections keep their SAs."""
        old_conns = self.config.connections
        added = [n for n in new.connections if n not in old_conns]
        removed = [n for n in old_conns if n not in new.connections]
        changed = [n for n in new.connections if n in old_conns and new.connections[n] != old_conns[n]]
        unchanged = [n for n in new.connections if n in old_conns and n not in changed]
        restart = [k for k in ("shm_path", "capacities", "control_socket", "ike_port", "natt_port", "fastpath")
                   if getattr(new.gateway, k) != getattr(self.gw, k)]
        if new.gateway.log_level != self.gw.log_level:
            logging.getLogger("ipsecgw").setLevel(new.gateway.log_level.upper())
            self.gw.log_level = new.gateway.log_level
        self.gw.export_keys = new.gateway.export_keys
        old_routes = self._routes()
        # drop what goes first, while its configuration is still known for the log lines
        for name in removed + changed:
            conn = old_conns[name]
            n = self.terminate_conn(name)
            for spec in conn.children:
                self._drop_policies((name, spec.name))
            log.info("reload: connection %s %s (%d IKE SA(s) terminated)", name,
                     "removed" if name in removed else "changed", n)
        conns: dict[str, ConnectionConfig] = {}
        for name, conn in new.connections.items():
            conns[name] = old_conns[name] if name in unchanged else conn
        self.config.connections = conns
        # %any is served by the sockets bound per host address at start-up, not a new address
        new_ips = sorted({a for c in conns.values() for a in c.local_addrs if a != "%any"}
                         - {ip for ip, _ in self._socks})
        if new_ips:
            await self._listen(new_ips, CommandError)
        for name in added + changed:
            conn = conns[name]
            for spec in conn.children:
                if spec.start_action == "trap":
                    self._set_policies((name, spec.name), _policies_for(spec.local_ts, spec.remote_ts, PRIO_TRAP),
                                       ())
            starts = [c for c in conn.children if c.start_action == "start"]
            if starts and conn.can_initiate:
                self.initiate(conn, starts[0], starts[1:])
            log.info("reload: connection %s %s", name, "added" if name in added else "re-added")
        routes = self._update_routes(old_routes)
        if new_ips and not self.control_only:
            self._restart_fastpath(f"new local address(es) {', '.join(new_ips)} need NAT-T sockets")
        summary = (f"{len(added)} added, {len(removed)} removed, {len(changed)} changed, {len(unchanged)} "
                   "unchanged" + (f"; restart needed to apply gateway.{', gateway.'.join(restart)}" if restart
                                  else ""))
        log.info("configuration reloaded from %s: %s", self.config_path, summary)
        return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged,
                "restart_needed": restart, "routes": routes, "summary": summary}

    def _routes(self) -> set[str]:
        from control.fastpath_plan import tun_routes

        return set(tun_routes(self.config))

    def _update_routes(self, old: set[str]) -> dict[str, list[str]]:
        """The fastpath routes remote selectors into its TUN at start-up; a reload moves them here."""
        new = self._routes()
        tun = self.gw.fastpath.tun
        # clear: af_packet has no TUN: the remote selectors are blackholed instead (fastpath/io/afpacket.py)
        blackhole = self.gw.fastpath.clear == "af_packet"
        if self.control_only or not (blackhole or os.path.exists(f"/sys/class/net/{tun}")):
            return {"added": [], "removed": []}
        for net, verb in [(n, "replace") for n in sorted(new - old)] + [(n, "del") for n in sorted(old - new)]:
            fam = "-6" if ipaddress.ip_network(net).version == 6 else "-4"
            where = ["blackhole", net] if blackhole else [net, "dev", tun]
            r = subprocess.run(["ip", fam, "route", verb, *where], capture_output=True, text=True)
            if r.returncode != 0:
                log.warning("reload: ip route %s %s dev %s: %s", verb, net, tun, r.stderr.strip())
        return {"added": sorted(new - old), "removed": sorted(old - new)}

    def _restart_fastpath(self, why: str) -> None:
        """The supervisor restarts a fastpath that exits; SAs survive in the region."""
        hdr = self.region.hdr if self.region is not None else None
        pid = int(hdr.fastpath_pid) if hdr is not None else 0
        if pid and self.region is not None and self.region.fastpath_alive():
            log.info("reload: restarting the fastpath (pid %d): %s", pid, why)
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError as exc:
                log.warning("cannot signal the fastpath: %s", exc)


async def run_gateway(config: Config, config_path: str, *, supervised: bool) -> int:
    """The control process: run until SIGTERM/SIGINT; returns the exit code."""
    return await run_until_signal(GatewayDaemon(config, config_path=config_path, supervised=supervised))
