"""The control socket's commands (``ipsecgw list-sas``, ``initiate``, ``terminate``, ``rekey``,
``export-keys``, ``status``), as a part of ``Daemon``: each turns a request into calls on the
daemon and a JSON-able answer, or raises ``CommandError`` with what to tell the operator."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from control.config import ChildSpec, ConnectionConfig
from control.ctl import CommandError
from control.sa_text import ike_proposal_name, ts_text
from control.wireshark_keys import wireshark_tables

if TYPE_CHECKING:
    from control.daemon import ChildEntry

log = logging.getLogger("ipsecgw.daemon")

__all__ = ["DaemonCommands"]


class DaemonCommands:
    """Mixed into ``Daemon`` (whose state and operations these use); ``control_handlers`` is what
    ``ControlServer`` dispatches on."""

    def control_handlers(self) -> dict[str, Any]:
        return {"list-sas": self._cmd_list_sas, "initiate": self._cmd_initiate, "terminate": self._cmd_terminate,
                "rekey": self._cmd_rekey, "export-keys": self._cmd_export_keys, "status": self._cmd_status}

    def _resolve(self, name: Any) -> tuple[ConnectionConfig, ChildSpec | None]:
        if not isinstance(name, str) or not name:
            raise CommandError("expected a connection or child name")
        if name in self.config.connections:
            return self.config.connections[name], None
        found = self.config.child(name)
        if found is None:
            raise CommandError(f"no connection or child named {name!r} (connections: "
                               f"{', '.join(self.config.connections)})")
        return found

    def _cmd_initiate(self, args: dict[str, Any], uid: int) -> str:
        conn, spec = self._resolve(args.get("name"))
        if not conn.can_initiate:
            raise CommandError(f"{conn.name}: remote_addrs is %any, there is nobody to initiate to")
        if spec is None:
            if self._up(conn.name) or self._connecting(conn.name):
                return f"{conn.name} is already up or connecting"
            first = next((c for c in conn.children if c.start_action == "start"), conn.children[0])
            self.initiate(conn, first, [c for c in conn.children if c is not first and c.start_action != "trap"])
            return f"initiating {conn.name}"
        return self.bring_up(conn, spec, "operator request")

    def _cmd_terminate(self, args: dict[str, Any], uid: int) -> str:
        conn, spec = self._resolve(args.get("name"))
        if spec is None:
            n = self.terminate_conn(conn.name)
            return f"terminated {n} IKE SA(s) of {conn.name}"
        n = self.terminate_child(conn.name, spec.name)
        return f"terminated {n} CHILD SA(s) named {spec.name}"

    def _cmd_rekey(self, args: dict[str, Any], uid: int) -> str:
        conn, spec = self._resolve(args.get("name"))
        if spec is None:
            entries = [e for e in self.ike_sas.values() if e.conn.name == conn.name and e.established is not None]
            if not entries:
                raise CommandError(f"{conn.name} has no established IKE SA")
            for e in entries:
                self.rekey_ike(e, "operator request")
            return f"rekeying {len(entries)} IKE SA(s) of {conn.name}"
        kids = [c for c in self.children if (c.conn, c.name) == (conn.name, spec.name) and c.state == "INSTALLED"]
        if not kids:
            raise CommandError(f"{spec.name} has no installed CHILD SA")
        for c in kids:
            self.rekey_child(c, "operator request")
        return f"rekeying {len(kids)} CHILD SA(s) named {spec.name}"

    def _cmd_status(self, args: dict[str, Any], uid: int) -> dict[str, Any]:
        return {"pid": os.getpid(), "uptime": time.time() - self.started_wall, "control_only": self.control_only,
                "shm": self.gw.shm_path, "ike_sas": len(self.ike_sas), "child_sas": len(self.children),
                "policies": sum(len(v) for v in self.policies.values()),
                "fastpath_alive": bool(self.region and self.region.fastpath_alive()), "counters": dict(self.stats),
                "fastpath_totals": self._fastpath_totals()}

    def _fastpath_totals(self) -> dict[str, Any] | None:
        """The gateway-wide counters the fastpath last wrote beside the region (fastpath/totals.py), with
        their age; None when no fastpath has run on this region's path yet."""
        from fastpath.totals import read_status

        st = read_status(self.gw.shm_path)
        if st is None:
            return None
        tot = dict(st["totals"])
        written = st.get("written")
        tot["age"] = round(time.time() - written, 1) if isinstance(written, int | float) else None
        tot["pid"] = st.get("pid")
        return tot

    def _cmd_list_sas(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        now, wall = self._now(), time.time()

        def until(t: float | None) -> float | None:
            return None if t is None else round(t - now, 1)

        out = []
        for e in sorted(self.ike_sas.values(), key=lambda e: e.unique):
            ike, est = e.ike, e.established
            item: dict[str, Any] = {
                "name": e.conn.name, "unique": e.unique,
                "state": ike.state.name, "initiator": ike.initiator,
                "spi_i": ike.spi_i.hex(), "spi_r": ike.spi_r.hex(),
                "local": {"addr": e.local_ip, "port": ike.local_port,
                          "id": str(est.local_id) if est else e.conn.local_id},
                "remote": {"addr": ike.remote[0], "port": ike.remote[1],
                           "id": str(est.remote_id) if est else e.conn.remote_id},
                "proposal": ike_proposal_name(est.suite) if est else None,
                "nat": {"local": est.nat_local, "remote": est.nat_remote} if est else None,
                "established": round(wall - e.established_wall, 1) if est else None,
                "rekey_in": until(e.rekey_at if not self.core_timers else getattr(ike, "rekey_at", None)),
                "children": [],
            }
            for c in [c for c in self.children if c.ike_spi == e.spi]:
                cj = self._child_json(c, now, wall)
                find = getattr(ike, "find_child", None)
                if self.core_timers and find is not None and c.state != "REKEYED":
                    st = find(spi_in=c.spi_in)
                    cj["rekey_in"] = until(getattr(st, "rekey_at", None))
                    status = getattr(st, "status", None)
                    if status is not None and c.state == "INSTALLED":
                        cj["state"] = str(status.name)
                item["children"].append(cj)
            out.append(item)
        orphans = [c for c in self.children if c.ike_spi not in self.ike_sas]
        if orphans:
            out.append({"name": None, "state": "REPLACED", "children": [self._child_json(c, now, wall)
                                                                        for c in orphans]})
        return out

    def _child_json(self, c: ChildEntry, now: float, wall: float) -> dict[str, Any]:
        def until(t: float | None) -> float | None:
            return None if t is None else round(t - now, 1)
        return {"name": c.name, "state": c.state, "mode": c.mode, "proposal": c.proposal,
                "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}",
                "slot_in": c.slot_in, "slot_out": c.slot_out if c.slot_out >= 0 else None, "encap": c.encap,
                "local_ts": [ts_text(t) for t in c.local_ts], "remote_ts": [ts_text(t) for t in c.remote_ts],
                "installed": round(wall - c.installed_wall, 1), "rekey_in": until(c.rekey_at),
                "expire_in": until(c.expire_at), "remove_in": until(c.remove_at),
                "outbound_waits": [f"{o.spi_in:08x}" for o in c.waits_for]}

    def _cmd_export_keys(self, args: dict[str, Any], uid: int) -> dict[str, str]:
        if not self.gw.export_keys:
            raise CommandError("key export is off: set gateway.export_keys: yes in the configuration and restart")
        if uid != 0:
            raise CommandError("key export is for root only")
        fmt = args.get("format", "wireshark")
        if fmt != "wireshark":
            raise CommandError(f"unknown format {fmt!r}: expected wireshark")
        log.warning("SA keys exported over the control socket (uid %d)", uid)
        return wireshark_tables(self)
