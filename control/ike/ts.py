"""Traffic selector arithmetic: intersection (narrowing, RFC 7296 §2.9) and containment."""

from __future__ import annotations

import ipaddress

from cdefs.sa import TrafficSelector
from control.ike.ts_payload import TrafficSelectorEntry


def intersect(a: TrafficSelectorEntry, b: TrafficSelectorEntry) -> TrafficSelectorEntry | None:
    """The selector both allow, or None.  Protocol 0 means any, so it yields to a specific one."""
    if a.start.version != b.start.version:
        return None
    # compared as integers: max()/min() on address objects run total_ordering's Python-level methods
    start = a.start if int(a.start) >= int(b.start) else b.start
    end = a.end if int(a.end) <= int(b.end) else b.end
    if int(start) > int(end):
        return None
    if a.proto and b.proto and a.proto != b.proto:
        return None
    proto = a.proto or b.proto
    lo, hi = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if lo > hi:
        return None
    for same in (a, b):         # usually one contains the other: no new (frozen, slow to build) entry
        if same.start is start and same.end is end and same.proto == proto and same.start_port == lo \
                and same.end_port == hi:
            return same
    return TrafficSelectorEntry(start, end, proto, lo, hi)


def narrow(proposed: list[TrafficSelectorEntry], policy: list[TrafficSelectorEntry]) -> list[TrafficSelectorEntry]:
    """Every non-empty intersection of a proposed selector with a policy selector, in proposal order."""
    out: list[TrafficSelectorEntry] = []
    for p in proposed:
        for q in policy:
            x = intersect(p, q)
            if x is not None and x not in out:
                out.append(x)
    return out


def covered(ts: TrafficSelectorEntry, by: list[TrafficSelectorEntry]) -> bool:
    """Whether one selector lies wholly inside one of ``by`` (what a responder may narrow to)."""
    return any(intersect(ts, q) == ts for q in by)


def to_fastpath(ts: TrafficSelectorEntry) -> TrafficSelector:
    return TrafficSelector(ts.start, ts.end, ts.proto, ts.start_port, ts.end_port)


def ts_text(ts: TrafficSelectorEntry) -> str:
    """A selector as list-sas and the logs show it: 10.1.0.0/24, 10.1.0.0/24[6/443]."""
    # a peer's selector may end before it starts (the explanation of a refusal shows it as sent)
    nets = list(ipaddress.summarize_address_range(ts.start, ts.end)) if int(ts.end) >= int(ts.start) else []
    base = str(nets[0]) if len(nets) == 1 else f"{ts.start}-{ts.end}"
    if ts.proto or (ts.start_port, ts.end_port) != (0, 65535):
        ports = "" if (ts.start_port, ts.end_port) == (0, 65535) else (
            f"/{ts.start_port}" if ts.start_port == ts.end_port else f"/{ts.start_port}-{ts.end_port}")
        base += f"[{ts.proto}{ports}]"
    return base
