"""Message ID windows (RFC 7296 §2.3).

Each side advertises, with a SET_WINDOW_SIZE notify in IKE_AUTH (or a later INFORMATIONAL), how many
requests it accepts before answering the first of them; without one the window is 1.

- ``ResponderWindow``: the requests we answer.  A request is accepted when its Message ID lies in
  [lowest unanswered, lowest unanswered + our window) and was not answered yet, whatever the order
  they arrive in; every answer is kept (per Message ID) until it falls out of the window, so a
  retransmitted request is answered again from the cache, byte for byte.
- ``may_send``: whether one more request of ours fits the peer's window, given the Message IDs still
  waiting for their answer.  Only exchanges that do not depend on each other's results run side by
  side (tasks with ``concurrent = True``: CHILD SA creation, rekey and delete, liveness checks); an
  IKE rekey or Delete waits until nothing else is in flight.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from control.ike.constants import Notify
from control.ike.message import Message
from control.ike.payloads import NotifyPayload, Payload

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

MAX_WINDOW = 64         # what we accept from a peer's SET_WINDOW_SIZE; more buys nothing here


class ResponderWindow:
    def __init__(self, size: int = 1):
        self.size = max(1, size)
        self.next = 0                   # lowest Message ID not answered yet
        self._answers: dict[int, tuple[bytes, list]] = {}   # mid -> (request as received, response datagrams)

    def cached(self, mid: int) -> tuple[bytes, list] | None:
        """The request and response datagrams of an answered Message ID still in the window."""
        return self._answers.get(mid)

    def acceptable(self, mid: int) -> bool:
        return self.next <= mid < self.next + self.size and mid not in self._answers

    def answered(self, mid: int, request: bytes, dgrams: list) -> None:
        self._answers[mid] = (request, dgrams)
        while self.next in self._answers:
            self.next += 1
        # keep what a peer may still retransmit: its window reaches back `size` requests from the next one.
        # Answers below `next` are contiguous, so an old one can only be there with more than `size` kept.
        if len(self._answers) > self.size:
            for old in [m for m in self._answers if m < self.next - self.size]:
                del self._answers[old]

    def __len__(self) -> int:
        return len(self._answers)


def may_send(new_mid: int, in_flight: Iterable[int], peer_window: int) -> bool:
    """A request with ``new_mid`` may go when it lies within ``peer_window`` of the oldest unanswered one."""
    waiting = list(in_flight)
    return not waiting or new_mid < min(waiting) + peer_window


def window_notify_data(size: int) -> bytes:
    return struct.pack("!I", size)


def parse_window_notify(data: bytes) -> int | None:
    """The window a SET_WINDOW_SIZE notify announces (clamped to MAX_WINDOW), None when malformed."""
    if len(data) != 4:
        return None
    size = struct.unpack("!I", data)[0]
    return min(size, MAX_WINDOW) if size >= 1 else None


def window_payloads(sa: IkeSA) -> list[Payload]:
    """Our SET_WINDOW_SIZE, when we accept more than the default of one request at a time."""
    size = sa.config.window_size
    return [NotifyPayload(Notify.SET_WINDOW_SIZE, window_notify_data(size))] if size > 1 else []


def note_peer_window(sa: IkeSA, msg: Message) -> None:
    """Adopt the peer's SET_WINDOW_SIZE, if the message has one (a malformed one is counted, ignored)."""
    for n in msg.notifies(Notify.SET_WINDOW_SIZE):
        size = parse_window_notify(n.data)
        if size is None:
            sa.stats["bad_set_window_size"] += 1
            continue
        sa.peer_window = size
        sa.stats["peer_window_size"] = size


__all__ = ["window_payloads", "note_peer_window", "ResponderWindow", "may_send", "window_notify_data",
           "parse_window_notify", "MAX_WINDOW"]
