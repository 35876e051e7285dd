"""What the daemon's intake (control/ike_intake.py) needs from the daemon around it, without sockets: a clock
the test moves, counters, and the datagrams and IKE SAs the intake hands back."""

from __future__ import annotations

from control.ike.events import Datagram
from control.sa_records import IkeEntry


class IntakeHost:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t
        self.counts: dict[str, int] = {}
        self.sent: list[Datagram] = []
        self.sent_from: list[str] = []          # the local address each of ``sent`` left from
        self.processed: list[IkeEntry] = []

    def now(self) -> float:
        return self.t

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def send(self, local_ip: str, d: Datagram) -> None:
        self.sent.append(d)
        self.sent_from.append(local_ip)

    def process(self, entry: IkeEntry) -> None:
        self.processed.append(entry)
