"""``ipsecgw list-policies``: the SPD entries control installed, with what each is bound to."""

from __future__ import annotations

from typing import Any

from control.adoption import Adoption
from control.commands.base import CommandFamily
from control.ctl import Handler
from control.daemon import Daemon
from control.shm import BYPASS, DISCARD, PROTECT

__all__ = ["PolicyListing"]

_ACTIONS = {PROTECT: "protect", BYPASS: "bypass", DISCARD: "discard"}


class PolicyListing(CommandFamily):
    def __init__(self, daemon: Daemon, adoption: Adoption):
        self.daemon, self.adoption = daemon, adoption

    def handlers(self) -> dict[str, Handler]:
        return {"list-policies": self.list_policies}

    def list_policies(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        d = self.daemon
        region = d.region
        assert region is not None and d.spd is not None and d.installer is not None
        out = []

        def entry(index: int, conn: str | None, child: str | None, bound: str, sas: list[int]) -> dict[str, Any]:
            try:
                p = region.policy(index)
            except KeyError:
                return {}
            return {"index": index, "connection": conn, "child": child, "src": p.src, "dst": p.dst,
                    "proto": p.proto, "sport": list(p.sport), "dport": list(p.dport),
                    "action": _ACTIONS.get(p.action, str(p.action)), "priority": p.priority, "state": bound,
                    "sa_slots": sas}

        for (conn, child), idx in sorted(d.spd.indices.items()):
            live = d.installer.child_up(conn, child)
            if live is not None and live.slot_out >= 0:
                bound, sas = f"SPI 0x{live.spi_out:08x}", [live.slot_out]
            else:
                bound, sas = "trap (ACQUIRE on match)", []
            for index in idx:
                e = entry(index, conn, child, bound, sas)
                if e:
                    out.append(e)
        for key, idx in self.adoption.adopted_policies.items():
            for index in idx:
                e = entry(index, key[0] if key else None, key[1] if key else None, "adopted (previous control)",
                          [])
                if e:
                    out.append(e)
        return sorted(out, key=lambda e: (e["priority"], e["index"]))
