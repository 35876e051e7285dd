"""A CHILD SA's traffic selectors as outbound SPD policies (prefix pairs) for the shared-memory region."""

from __future__ import annotations

import ipaddress

from control.ike.message import TrafficSelectorEntry
from control.shm import PROTECT, Policy

__all__ = ["policies_for"]


def policies_for(local: list[TrafficSelectorEntry], remote: list[TrafficSelectorEntry],
                 base_prio: int) -> list[Policy]:
    """Outbound SPD entries (prefix pairs) covering local_ts -> remote_ts."""
    out = []
    for lts in local:
        for rts in remote:
            if lts.start.version != rts.start.version or (lts.proto and rts.proto and lts.proto != rts.proto):
                continue
            for src in ipaddress.summarize_address_range(lts.start, lts.end):
                for dst in ipaddress.summarize_address_range(rts.start, rts.end):
                    out.append(Policy(str(src), str(dst), lts.proto or rts.proto,
                                      (lts.start_port, lts.end_port), (rts.start_port, rts.end_port), PROTECT,
                                      base_prio - src.prefixlen - dst.prefixlen))
    return out
