"""``ipsecgw initiate``, ``terminate`` and ``rekey``: a connection or one of its children."""

from __future__ import annotations

from typing import Any

from control.commands.base import CommandFamily, resolve
from control.ctl import CommandError, Handler
from control.daemon import Daemon
from control.sa_records import INSTALLED

__all__ = ["LifecycleCommands"]


class LifecycleCommands(CommandFamily):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {"initiate": self.initiate, "terminate": self.terminate, "rekey": self.rekey}

    def initiate(self, args: dict[str, Any], uid: int) -> str:
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if not conn.can_initiate:
            raise CommandError(f"{conn.name}: remote_addrs is %any, there is nobody to initiate to")
        if spec is None:
            if d.ike_sas.up(conn.name) or d.ike_sas.connecting(conn.name):
                return f"{conn.name} is already up or connecting"
            first = next((c for c in conn.children if c.start_action == "start"), conn.children[0])
            d.initiate(conn, first, [c for c in conn.children if c is not first and c.start_action != "trap"])
            return f"initiating {conn.name}"
        return d.bring_up(conn, spec, "operator request")

    def terminate(self, args: dict[str, Any], uid: int) -> str:
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if spec is None:
            n = d.terminate_conn(conn.name)
            return f"terminated {n} IKE SA(s) of {conn.name}"
        n = d.terminate_child(conn.name, spec.name)
        return f"terminated {n} CHILD SA(s) named {spec.name}"

    def rekey(self, args: dict[str, Any], uid: int) -> str:
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if spec is None:
            entries = [e for e in d.ike_sas.of_conn(conn.name) if e.established is not None]
            if not entries:
                raise CommandError(f"{conn.name} has no established IKE SA")
            for e in entries:
                d.rekey_ike(e, "operator request")
            return f"rekeying {len(entries)} IKE SA(s) of {conn.name}"
        kids = [c for c in d.children if (c.conn, c.name) == (conn.name, spec.name) and c.state == INSTALLED]
        if not kids:
            raise CommandError(f"{spec.name} has no installed CHILD SA")
        for c in kids:
            d.rekey_child(c, "operator request")
        return f"rekeying {len(kids)} CHILD SA(s) named {spec.name}"
