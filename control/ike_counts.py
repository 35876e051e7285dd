"""IKE messages by exchange and direction, and failed negotiations by reason: what ``status`` and the
Prometheus endpoint (``control.metrics``) report, counted by the daemon where datagrams cross its sockets
and where the IKE core's failure events arrive.  Labels stay bounded: exchanges outside RFC 7296's four
count as ``other``, reasons are notify names (a fixed IANA set) or one of a few words."""

from __future__ import annotations

from collections import Counter
from typing import Any

from control.ike.constants import NON_ESP_MARKER, ExchangeType
from control.ike.events import ChildSaFailed, IkeSaFailed
from control.sa_text import notify_text

__all__ = ["IkeCounts", "TIMEOUT", "status_lines"]

_HEADER = 28                    # an IKE header; anything shorter is no message (the intake counts it apart)
TIMEOUT = "timeout"             # no response after every retransmission, or a half-open SA that never completed


def _exchange(data: bytes) -> str:
    try:
        return ExchangeType(data[18]).name
    except ValueError:
        return "other"


def failure_reason(notify: int, reason: str) -> str:
    """The label of a failure: the notify that ended it, else what the core's reason text says."""
    if notify:
        return notify_text(notify)
    if reason.startswith("no response to") or "timed out" in reason:
        return TIMEOUT
    return "other"


class IkeCounts:
    def __init__(self) -> None:
        self.messages: Counter[tuple[str, str]] = Counter()     # (exchange, "in" | "out")
        self.failures: Counter[str] = Counter()

    def received(self, data: bytes, natt: bool) -> None:
        """A datagram on an IKE socket: counted when it is an IKE message (not ESP-in-UDP, a keepalive...)."""
        self._count(data, natt, "in")

    def sent(self, data: bytes, natt: bool) -> None:
        """An IKE datagram we send (with its non-ESP marker when ``natt``)."""
        self._count(data, natt, "out")

    def _count(self, data: bytes, natt: bool, direction: str) -> None:
        if natt:
            if not data.startswith(NON_ESP_MARKER):
                return
            data = data[len(NON_ESP_MARKER):]
        if len(data) >= _HEADER:
            self.messages[(_exchange(data), direction)] += 1

    def event(self, ev: object) -> None:
        """An event of the IKE core: a failed IKE or CHILD SA negotiation is counted by its reason."""
        if isinstance(ev, IkeSaFailed | ChildSaFailed):
            self.failures[failure_reason(ev.notify, ev.reason)] += 1

    def timed_out(self) -> None:
        """A half-open IKE SA dropped: the core ends it quietly (no event), so the daemon says so here."""
        self.failures[TIMEOUT] += 1

    def as_json(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        for (exchange, direction), n in sorted(self.messages.items()):
            out[direction][exchange] = n
        return {"messages": out, "negotiation_failures": dict(sorted(self.failures.items()))}


def status_lines(ike: dict[str, Any] | None) -> list[str]:
    """``ipsecgw status``'s text for ``as_json``'s output: messages each way by exchange, failures by reason."""
    if not ike:
        return []

    def side(counts: dict[str, int]) -> str:
        inner = ", ".join(f"{k} {v}" for k, v in counts.items())
        return f"{sum(counts.values())}" + (f" ({inner})" if inner else "")

    msgs = ike.get("messages") or {}
    failed = ike.get("negotiation_failures") or {}
    return [f"IKE messages: in {side(msgs.get('in') or {})}, out {side(msgs.get('out') or {})}; failed "
            "negotiations: " + (", ".join(f"{k} {v}" for k, v in failed.items()) or "none")]
