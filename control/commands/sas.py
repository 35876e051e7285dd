"""``ipsecgw list-sas``: every IKE SA with its CHILD SAs, as the daemon and the IKE core see them.

A ``SaView`` adds what others know about each CHILD SA (the gateway: the fastpath's engine,
placement and counters) and rows of its own (SAs adopted from a previous control process)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from control.commands.base import CommandFamily
from control.ctl import Handler
from control.daemon import Daemon
from control.sa_records import INSTALLED, REKEYED, ChildEntry
from control.sa_text import ike_proposal_name, ts_text

__all__ = ["SaListing", "SaView"]


class SaView(Protocol):
    def child_extra(self, c: ChildEntry) -> dict[str, Any]: ...

    def extra_rows(self) -> list[dict[str, Any]]: ...


class SaListing(CommandFamily):
    def __init__(self, daemon: Daemon, view: SaView | None = None):
        self.daemon, self.view = daemon, view

    def handlers(self) -> dict[str, Handler]:
        return {"list-sas": self.list_sas}

    def list_sas(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        d = self.daemon
        now, wall = d.now(), time.time()

        def until(t: float | None) -> float | None:
            return None if t is None else round(t - now, 1)

        out = []
        for e in sorted(d.ike_sas, key=lambda e: e.unique):
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
                "rekey_in": until(e.rekey_at if not d.core_timers else ike.rekey_at),
                # RFC 7296 §3.15: leased to the peer (responder) or given us (initiator)
                "vips": [str(a) for a in ike.vips],
                "children": [],
            }
            for c in [c for c in d.children if c.ike_spi == e.spi]:
                cj = self._child_json(c, now, wall)
                if d.core_timers and c.state != REKEYED:
                    st = ike.find_child(spi_in=c.spi_in)
                    cj["rekey_in"] = until(st.rekey_at if st is not None else None)
                    if st is not None and c.state == INSTALLED:
                        cj["state"] = str(st.status.name)
                item["children"].append(cj)
            out.append(item)
        orphans = [c for c in d.children if c.ike_spi not in d.ike_sas]
        if orphans:
            out.append({"name": None, "state": "REPLACED", "children": [self._child_json(c, now, wall)
                                                                        for c in orphans]})
        if self.view is not None:
            out += self.view.extra_rows()
        return out

    def _child_json(self, c: ChildEntry, now: float, wall: float) -> dict[str, Any]:
        def until(t: float | None) -> float | None:
            return None if t is None else round(t - now, 1)
        out = {"name": c.name, "state": c.state, "mode": c.mode, "proposal": c.proposal,
               "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}",
               "slot_in": c.slot_in, "slot_out": c.slot_out if c.slot_out >= 0 else None, "encap": c.encap,
               "local_ts": [ts_text(t) for t in c.local_ts], "remote_ts": [ts_text(t) for t in c.remote_ts],
               "installed": round(wall - c.installed_wall, 1), "rekey_in": until(c.rekey_at),
               "expire_in": until(c.expire_at), "remove_in": until(c.remove_at),
               "outbound_waits": [f"{o.spi_in:08x}" for o in c.waits_for]}
        if self.view is not None:
            out.update(self.view.child_extra(c))
        return out
