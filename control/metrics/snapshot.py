"""One consistent copy of the gateway's state for a scrape, taken on the event loop.

Nothing here runs on the fastpath: the per-SA packet and byte counters are the ones the fastpath already
publishes in the region (read as ``list-sas`` reads them), the drops by reason are the gateway-wide totals
it writes beside the region twice a second (fastpath/totals.py; ``status`` shows the same)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdefs.sa import Direction
from control.daemon import Daemon
from control.fastpath_view import FastpathView
from control.ike.events import State
from control.sa_records import INSTALLED, REKEYED, REKEYING
from fastpath.status import Status

__all__ = ["Snapshot", "SaSample", "take_snapshot", "drops_by_reason", "ADOPTED"]

ADOPTED = "(adopted)"       # the child label of SAs kept from a previous control process (no name known)
IKE_STATES = tuple(s.name for s in State)
CHILD_STATES = (INSTALLED, REKEYING, REKEYED)
# outbound classifier verdicts that mean the packet was not forwarded (fastpath/io/kio.py VERDICT_NAMES)
_OUT_DROPS = ("discard", "no-policy", "malformed", "too-big", "icmp-too-big", "engine-drop")
# gateway-wide scalar drop counters of fastpath/totals.py, with the direction they belong to
_SCALAR_DROPS = {"send_failed": ("out", "send-failed"), "held_dropped": ("out", "hold-overflow"),
                 "gro_dropped": ("in", "gro"), "ah6_unrebuilt": ("in", "ah6-unrebuilt")}


@dataclass(frozen=True)
class SaSample:
    child: str
    spi: int
    dir: str            # "in" | "out"
    packets: int
    bytes: int


@dataclass
class Snapshot:
    ike_sas: dict[str, int]
    child_sas: dict[str, int]
    sas: list[SaSample]
    drops: dict[tuple[str, str], int]               # (dir, reason)
    ike_messages: dict[tuple[str, str], int]        # (exchange, dir)
    failures: dict[str, int]
    fastpath_up: bool
    info: dict[str, str] = field(default_factory=dict)


def drops_by_reason(totals: dict[str, Any] | None) -> dict[tuple[str, str], int]:
    """(dir, reason) -> packets from the fastpath's totals (``Totals.as_dict``'s shape): inbound by every
    engine status but ok, outbound by the verdicts that drop, and the scalar drop counters."""
    if not totals:
        return {}
    # every inbound reason from zero, so an alert on increase() sees the first drop of a kind too
    out = {("in", s.label): 0 for s in Status if s != Status.OK}
    for label, n in (totals.get("inbound") or {}).items():
        if label != "ok" and isinstance(n, int):
            out[("in", label)] = n
    outbound = totals.get("outbound") or {}
    for verdict in _OUT_DROPS:
        n = outbound.get(verdict, 0)
        if isinstance(n, int):
            out[("out", verdict)] = n
    for key, where in _SCALAR_DROPS.items():
        n = totals.get(key, 0)
        if isinstance(n, int):
            out[where] = n
    return out


def _region_drops(view: FastpathView) -> dict[tuple[str, str], int]:
    """No totals file (io: dpdk writes its own): the per-SA drops of the live SAs, summed by reason."""
    t = view.totals()
    return {(d, reason): n for d in ("in", "out") for reason, n in t[d]["drops"].items()}


def take_snapshot(d: Daemon, view: FastpathView, version: str) -> Snapshot:
    """Must run on the daemon's event loop: it reads state that the loop changes."""
    from fastpath.totals import read_status

    ike = dict.fromkeys(IKE_STATES, 0)
    for e in d.ike_sas:
        ike[e.ike.state.name] = ike.get(e.ike.state.name, 0) + 1
    kids = dict.fromkeys(CHILD_STATES, 0)
    samples: dict[tuple[str, int, str], SaSample] = {}

    def add(child: str, spi: int, direction: str, counters: dict[str, Any] | None) -> None:
        key = (child, spi, direction)
        if counters is not None and key not in samples:     # one series per label set, whatever happens
            samples[key] = SaSample(child, spi, direction, counters["packets"], counters["bytes"])

    for c in d.children:
        kids[c.state] = kids.get(c.state, 0) + 1
        add(c.name, c.spi_in, "in", view.slot_counters(c.slot_in, c.id_in))
        if c.slot_out >= 0:
            add(c.name, c.spi_out, "out", view.slot_counters(c.slot_out, c.id_out))
    for slot, (sa, direction, sa_id) in sorted(view.adoption.adopted_sas.items()):
        add(ADOPTED, sa.spi, "in" if direction == Direction.IN else "out", view.slot_counters(slot, sa_id))
    st = read_status(d.gw.shm_path)
    drops = drops_by_reason(st["totals"]) if st is not None else _region_drops(view)
    fp = d.gw.fastpath
    software = view.software()
    present = [s.name for s in software]
    info = {"version": version, "io": fp.io, "engine_configured": fp.engine,
            "engine_used": (present[0] if present else "-") if fp.engine == "best" else fp.engine,
            "engines_present": ",".join(present)}
    return Snapshot(ike, kids, list(samples.values()), drops, dict(d.ike_counts.messages),
                    dict(d.ike_counts.failures), bool(d.region is not None and d.region.fastpath_alive()), info)


SnapshotSource = Callable[[], Snapshot]
