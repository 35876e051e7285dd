"""``ipsecgw reload``: re-read the configuration file and apply it without touching what did not change:
new connections are added (traps installed, ``start`` children initiated), removed ones are terminated
(Deletes sent), changed ones are terminated and added again, unchanged ones keep their SAs."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
from typing import Any

from control.commands.base import CommandFamily
from control.config import Config, ConfigError, ConnectionConfig, load_config
from control.ctl import CommandError, Handler
from control.daemon import Daemon
from control.pools import pools_of
from control.supervisor import SUPERVISOR_PID_ENV

__all__ = ["ReloadCommand"]

log = logging.getLogger("ipsecgw.daemon")


class ReloadCommand(CommandFamily):
    def __init__(self, daemon: Daemon, config_path: str | None):
        self.daemon, self.config_path = daemon, config_path
        self.count = 0

    def handlers(self) -> dict[str, Handler]:
        return {"reload": self.reload}

    async def reload(self, args: dict[str, Any], uid: int) -> dict[str, Any]:
        if not self.config_path:
            raise CommandError("this daemon was not started from a file; nothing to reload")
        # the supervisor tells systemd RELOADING=1 / READY=1 (NotifyAccess=main: only it may notify)
        _tell_supervisor(signal.SIGUSR1)
        try:
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                raise CommandError("configuration not reloaded:\n" + "\n".join(exc.problems)) from None
            result = await self.apply_config(new)
            self.count += 1
            return result
        finally:
            _tell_supervisor(signal.SIGUSR2)

    async def apply_config(self, new: Config) -> dict[str, Any]:
        """Make the running connections those of ``new``; unchanged connections keep their SAs."""
        d = self.daemon
        gw = d.gw
        assert d.spd is not None
        old_conns = d.config.connections
        added = [n for n in new.connections if n not in old_conns]
        removed = [n for n in old_conns if n not in new.connections]
        changed = [n for n in new.connections if n in old_conns and new.connections[n] != old_conns[n]]
        unchanged = [n for n in new.connections if n in old_conns and n not in changed]
        restart = [k for k in ("shm_path", "capacities", "control_socket", "ike_port", "natt_port", "fastpath",
                               "cookie_threshold", "half_open_max", "half_open_per_source", "half_open_timeout",
                               # both processes log in one format; the fastpath has no way to be told
                               "log_format")
                   if getattr(new.gateway, k) != getattr(gw, k)]
        if new.gateway.metrics_listen != gw.metrics_listen:     # the HTTP server is bound once, at start
            restart.append("metrics.listen")
        if new.gateway.log_level != gw.log_level:
            logging.getLogger("ipsecgw").setLevel(new.gateway.log_level.upper())
            gw.log_level = new.gateway.log_level
        gw.export_keys = new.gateway.export_keys
        old_routes = self._routes()
        # drop what goes first, while its configuration is still known for the log lines
        for name in removed + changed:
            conn = old_conns[name]
            n = d.terminate_conn(name)
            for spec in conn.children:
                d.spd.drop((name, spec.name))
            log.info("reload: connection %s %s (%d IKE SA(s) terminated)", name,
                     "removed" if name in removed else "changed", n)
        conns: dict[str, ConnectionConfig] = {}
        for name, conn in new.connections.items():
            conns[name] = old_conns[name] if name in unchanged else conn
        d.config.connections = conns
        d.config.pools = new.pools
        d.pools.reconfigure(pools_of(new))     # unchanged pools keep their leases
        # %any is served by the sockets bound per host address at start-up, not a new address
        new_ips = sorted({a for c in conns.values() for a in c.local_addrs if a != "%any"}
                         - {ip for ip, _ in d.socks})
        if new_ips:
            await d.listen(new_ips, CommandError)
        for name in added + changed:
            conn = conns[name]
            for spec in conn.children:
                if spec.start_action == "trap":
                    d.spd.set_trap((name, spec.name), spec.local_ts, spec.remote_ts)
            starts = [c for c in conn.children if c.start_action == "start"]
            if starts and conn.can_initiate:
                d.initiate(conn, starts[0], starts[1:])
            log.info("reload: connection %s %s", name, "added" if name in added else "re-added")
        routes = self._update_routes(old_routes)
        if new_ips and not d.control_only:
            self._restart_fastpath(f"new local address(es) {', '.join(new_ips)} need NAT-T sockets")
        summary = (f"{len(added)} added, {len(removed)} removed, {len(changed)} changed, {len(unchanged)} "
                   "unchanged" + (f"; restart needed to apply gateway.{', gateway.'.join(restart)}" if restart
                                  else ""))
        log.info("configuration reloaded from %s: %s", self.config_path, summary)
        return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged,
                "restart_needed": restart, "routes": routes, "summary": summary}

    def _routes(self) -> set[str]:
        from control.fastpath_plan import tun_routes

        return set(tun_routes(self.daemon.config))

    def _update_routes(self, old: set[str]) -> dict[str, list[str]]:
        """The fastpath routes remote selectors into its TUN at start-up; a reload moves them here."""
        d = self.daemon
        new = self._routes()
        tun = d.gw.fastpath.tun
        # clear: af_packet has no TUN: the remote selectors are blackholed instead (fastpath/io/afpacket.py)
        blackhole = d.gw.fastpath.clear == "af_packet"
        if d.control_only or not (blackhole or os.path.exists(f"/sys/class/net/{tun}")):
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
        region = self.daemon.region
        hdr = region.hdr if region is not None else None
        pid = int(hdr.fastpath_pid) if hdr is not None else 0
        if pid and region is not None and region.fastpath_alive():
            log.info("reload: restarting the fastpath (pid %d): %s", pid, why)
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError as exc:
                log.warning("cannot signal the fastpath: %s", exc)


def _tell_supervisor(sig: signal.Signals) -> None:
    """Signal the supervisor that started us, if one did (its pid in the environment, and still our parent:
    never a stranger that inherited the variable)."""
    pid = os.environ.get(SUPERVISOR_PID_ENV, "")
    if pid.isdigit() and int(pid) == os.getppid():
        try:
            os.kill(int(pid), sig)
        except OSError:
            pass
