"""What the fastpath does with each SA, as the operator's commands show it: the engine and placement
(``fastpath.placement.place`` over the software engines present, since kernel I/O has no offload, or
what the DPDK fastpath reports), and packet/byte counters and drops by reason per direction, read
from the region's counters."""

from __future__ import annotations

from typing import Any

from cdefs.sa import Direction
from control.adoption import Adoption
from control.daemon import Daemon
from control.sa_records import ChildEntry
from fastpath.status import Status

__all__ = ["FastpathView"]


def _counters_json(stats: Any) -> dict[str, Any]:
    return {"packets": int(stats.packets), "bytes": int(stats.bytes),
            "drops": {Status(k).label: int(v) for k, v in stats.drops.items() if v}}


class FastpathView:
    """The gateway's ``SaView`` for ``list-sas``, and the totals ``status`` sums."""

    def __init__(self, daemon: Daemon, adoption: Adoption):
        self.daemon, self.adoption = daemon, adoption
        self._placement_cache: dict[tuple[int, int], tuple[str, str]] = {}
        self._software: tuple | None = None

    def software(self) -> tuple:
        from fastpath.placement import present_software

        if self._software is None:
            self._software = present_software()
        return self._software

    def placement(self, slot: int, sa_id: int) -> tuple[str, str]:
        """(engine, placement) for one SA slot; placement is a pure function, so cache it per SA."""
        got = self._placement_cache.get((slot, sa_id))
        if got is not None:
            return got
        from fastpath.placement import place

        software = self.software()
        region, gw = self.daemon.region, self.daemon.gw
        assert region is not None
        found = region.sa(slot)
        if found is None:
            return "-", "-"
        sa, direction, _ = found
        pl = place(sa, direction, None, software)
        cand = pl.engine
        want = gw.fastpath.engine
        engine = (cand.device if cand else "-") if want == "best" else want
        got = (engine, str(cand) if cand else "none")
        if gw.fastpath.io == "dpdk":
            # the DPDK fastpath places each SA on the devices it discovered and reports it in its status file
            dp = self._dpdk_placement(slot, sa.spi)
            if dp is None:
                return "-", "pending (the DPDK fastpath has not reported this SA yet)"
            got = (dp.get("label") or "-", dp.get("engine") or "none")
        if len(self._placement_cache) > 4 * region.caps.n_sa:
            self._placement_cache.clear()
        self._placement_cache[(slot, sa_id)] = got
        return got

    def _dpdk_placement(self, slot: int, spi: int) -> dict[str, Any] | None:
        """The DPDK fastpath's placement of a slot (fastpath/dpdk/daemon.py writes it), if it is this SA's."""
        from fastpath.dpdk.status import read_status as read_dpdk

        got = ((read_dpdk(self.daemon.gw.shm_path) or {}).get("placements") or {}).get(str(slot))
        return got if got is not None and got.get("spi") == spi else None

    def _placement_reasons(self, slot: int) -> list[str]:
        """io dpdk: why the SA is not on a better rung (each engine skipped or fallen back from)."""
        region = self.daemon.region
        found = region.sa(slot) if region is not None and slot >= 0 else None
        dp = self._dpdk_placement(slot, found[0].spi) if found is not None else None
        return [f"{s['engine']}: {s['reason']}" for s in (dp or {}).get("skipped", [])
                if not s["engine"].endswith(":-")]

    def slot_counters(self, slot: int, sa_id: int) -> dict[str, Any] | None:
        region = self.daemon.region
        if slot < 0 or region is None:
            return None
        c = region.counters(slot)
        if c is None or c.sa_id != sa_id:
            return {"packets": 0, "bytes": 0, "drops": {}}
        return _counters_json(c.stats)

    # -- SaView --------------------------------------------------------------------------------------------

    def child_extra(self, c: ChildEntry) -> dict[str, Any]:
        out: dict[str, Any] = {}
        engine, placement = self.placement(c.slot_in, c.id_in)
        out["engine"], out["placement"] = engine, placement
        if self.daemon.gw.fastpath.io == "dpdk":
            out["placement_out"] = self.placement(c.slot_out, c.id_out)[1] if c.slot_out >= 0 else None
            out["placement_skipped"] = self._placement_reasons(c.slot_in)
        out["counters"] = {"in": self.slot_counters(c.slot_in, c.id_in),
                           "out": self.slot_counters(c.slot_out, c.id_out)}
        return out

    def extra_rows(self) -> list[dict[str, Any]]:
        adopted = self.adoption.adopted_sas
        if not adopted:
            return []
        kids = []
        for slot, (sa, direction, sa_id) in sorted(adopted.items()):
            engine, placement = self.placement(slot, sa_id)
            kids.append({"slot": slot, "spi": f"{sa.spi:08x}", "direction": direction.name.lower(),
                         "proposal": sa.enc, "engine": engine, "placement": placement,
                         "counters": self.slot_counters(slot, sa_id)})
        return [{"name": None, "state": "ADOPTED", "children": [], "adopted": kids}]

    def totals(self) -> dict[str, Any]:
        tot: dict[str, Any] = {"in": {"packets": 0, "bytes": 0, "drops": {}},
                               "out": {"packets": 0, "bytes": 0, "drops": {}}}
        children = self.daemon.children
        slots = [(c.slot_in, c.id_in, "in") for c in children]
        slots += [(c.slot_out, c.id_out, "out") for c in children if c.slot_out >= 0]
        slots += [(s, v[2], "in" if v[1] == Direction.IN else "out") for s, v in self.adoption.adopted_sas.items()]
        for slot, sa_id, d in slots:
            c = self.slot_counters(slot, sa_id)
            if c is None:
                continue
            t = tot[d]
            t["packets"] += c["packets"]
            t["bytes"] += c["bytes"]
            for k, v in c["drops"].items():
                t["drops"][k] = t["drops"].get(k, 0) + v
        return tot
