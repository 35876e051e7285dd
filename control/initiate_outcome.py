"""What ``ipsecgw initiate`` waits for: the end of one initiation, told by the IKE core's events.

An initiation ends well when the IKE SA and every CHILD SA it was asked for are up, and badly on the first
failure of the IKE SA it started (IKE_SA_INIT or IKE_AUTH refused, retransmits run out) or of one of those
children.  The daemon feeds every event it acts on to ``note`` (and a dropped IKE SA to ``dropped``); the
control command awaits the waiter's future with its own timeout, so the daemon keeps serving everything
else meanwhile.  A waiter that times out only stops waiting: the negotiation itself goes on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed, State
from control.ike.explain import auth_offer, child_offer, ike_offer
from control.sa_records import IkeEntry
from control.sa_text import notify_text

__all__ = ["Outcome", "OutcomeWaiter", "OutcomeWaiters", "offered_lines"]


@dataclass
class Outcome:
    """The answer of ``initiate --wait``: ``ok``, or the failure's notify (or "timeout") and its reason."""

    ok: bool
    connection: str
    children: list[str]
    peer: str
    failure: str = ""               # the notify's name, "timeout", or "IKE SA gone"
    reason: str = ""
    received: bool = False          # the peer sent the notify (else we refused or gave up)
    detail: list[str] = field(default_factory=list)     # the explanation (control.ike.explain)
    offered: list[str] = field(default_factory=list)    # what we offered, always shown on failure
    ike_sa: str = ""
    child_sas: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def offered_lines(entry: IkeEntry, children: list[str]) -> list[str]:
    """What this IKE SA offers the peer: IKE proposals, our identity and the children asked for."""
    cfg = entry.ike.config
    lines = ike_offer(cfg) + auth_offer(cfg)
    for c in cfg.children:
        if c.name in children:
            lines += child_offer(c)
    return lines


class OutcomeWaiter:
    def __init__(self, entry: IkeEntry, children: list[str], future: asyncio.Future[Outcome]):
        self.entry, self.future = entry, future
        self.conn = entry.conn.name
        self.children = list(children)
        self.pending = set(children)
        self.spis = {entry.spi}
        self.ike_up = entry.established is not None
        self.child_sas: list[dict[str, Any]] = []

    def outcome(self, ok: bool, failure: str = "", reason: str = "", received: bool = False,
                detail: tuple[str, ...] | list[str] = ()) -> Outcome:
        if received:
            detail = ()     # a refusal by the peer explains nothing beyond our offer, which ``offered`` holds
        return Outcome(ok, self.conn, self.children, self.entry.ike.remote[0], failure, reason, received,
                       list(detail), [] if ok else offered_lines(self.entry, self.children), self.entry.label,
                       self.child_sas)

    def finish(self, outcome: Outcome) -> None:
        if not self.future.done():
            self.future.set_result(outcome)

    def already(self) -> Outcome | None:
        """The outcome known at once: the IKE SA ended while the initiation was being set up."""
        if self.entry.ike.state == State.DEAD:
            return self.outcome(False, "IKE SA gone", "it ended before the wait began (see the log)")
        return None

    def timed_out(self, timeout: float) -> Outcome:
        waiting = ", ".join(sorted(self.pending)) if self.ike_up else "the IKE SA"
        return self.outcome(False, "timeout", f"no outcome within {timeout:g} s (still waiting for {waiting})")


class OutcomeWaiters:
    def __init__(self) -> None:
        self._waiting: list[OutcomeWaiter] = []

    def wait(self, entry: IkeEntry, children: list[str]) -> OutcomeWaiter:
        w = OutcomeWaiter(entry, children, asyncio.get_running_loop().create_future())
        self._waiting.append(w)
        return w

    def forget(self, w: OutcomeWaiter) -> None:
        if w in self._waiting:
            self._waiting.remove(w)

    def note(self, entry: IkeEntry, ev: object) -> None:
        for w in list(self._waiting):
            if entry.conn.name == w.conn:
                self._note(w, entry, ev)

    def _note(self, w: OutcomeWaiter, entry: IkeEntry, ev: object) -> None:
        mine = entry.spi in w.spis
        if isinstance(ev, IkeSaEstablished) and mine:
            w.ike_up = True
        elif isinstance(ev, ChildSaEstablished) and ev.name in w.pending and ev.rekey_of is None:
            # any IKE SA of the connection will do: the peer may have brought the child up first
            w.pending.discard(ev.name)
            w.child_sas.append({"name": ev.name, "spi_in": f"{ev.inbound.spi:08x}",
                                "spi_out": f"{ev.outbound.spi:08x}"})
            w.ike_up = w.ike_up or entry.established is not None
        elif isinstance(ev, ChildSaFailed) and mine and (ev.name in w.pending or not ev.name):
            w.finish(w.outcome(False, notify_text(ev.notify), f"CHILD SA {ev.name or '?'}: {ev.reason}",
                               ev.received, ev.detail))
            return
        elif isinstance(ev, IkeSaFailed) and mine:
            failure = notify_text(ev.notify) if ev.notify else "timeout"      # retransmits ran out
            w.finish(w.outcome(False, failure, ev.reason, ev.received, ev.detail))
            return
        if w.ike_up and not w.pending:
            w.finish(w.outcome(True))

    def dropped(self, entry: IkeEntry, reason: str) -> None:
        """An IKE SA left the table: a waiter still on it has failed (without an IkeSaFailed, e.g. deleted)."""
        for w in list(self._waiting):
            if entry.spi in w.spis and not w.future.done():
                w.finish(w.outcome(False, "IKE SA gone", reason))
