"""Rekeying a CHILD SA (RFC 7296 §1.3.3, §2.8): CREATE_CHILD_SA with a REKEY_SA notify naming the
old SA, the new pair installed next to the old one, and the old pair deleted by the rekey's initiator.

Simultaneous rekeys of one CHILD SA (§2.8.1): both exchanges complete; the one holding the lowest of
the four nonces made the redundant SA, which its initiator deletes; the initiator of the surviving
exchange deletes the old SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.ike.collision import lowest_nonce_wins
from control.ike.config import ChildConfig
from control.ike.constants import Notify
from control.ike.events import ChildSaEstablished, ChildState, ChildStatus
from control.ike.message import Message
from control.ike.payloads import NotifyPayload, Payload
from control.ike.tasks.child_create import ChildCreateInitiator, ChildCreateResponder
from control.ike.tasks.child_delete import ChildDeleteInitiator
from control.ike.ts_payload import TrafficSelectorEntry

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


class ChildRekeyInitiator(ChildCreateInitiator):
    def __init__(self, spi_in: int):
        super().__init__(None)
        self.spi = spi_in
        self.old: ChildState | None = None

    def rekey_of(self) -> int | None:
        return self.spi

    def extra_payloads(self, sa: IkeSA) -> list[Payload]:
        # the notify names the protocol of the SA it rekeys: AH for an AH child (RFC 7296 §3.10)
        assert self.old is not None
        return [NotifyPayload(Notify.REKEY_SA, b"", self.old.config.protocol, self.spi.to_bytes(4, "big"))]

    def selectors(self) -> tuple[list[TrafficSelectorEntry], list[TrafficSelectorEntry]]:
        assert self.old is not None
        return list(self.old.local_ts), list(self.old.remote_ts)

    def build_request(self, sa: IkeSA) -> list[Payload] | None:
        old = sa.find_child(spi_in=self.spi)
        again = old is not None and old is self.old and old.status == ChildStatus.REKEYING   # INVALID_KE retry
        if old is None or (old.status != ChildStatus.INSTALLED and not again):
            sa.stats["child_rekey_skipped"] += 1
            return None
        self.old = old
        self.config = old.config
        old.status = ChildStatus.REKEYING
        old.collision = None
        return super().build_request(sa)

    def established(self, sa: IkeSA, event: ChildSaEstablished, nonce_r: bytes, now: float) -> None:
        assert self.old is not None and self.state is not None
        old, col = self.old, self.old.collision
        redundant = col is not None and lowest_nonce_wins((self.nonce, nonce_r), (col[0], col[1]))
        event.redundant = redundant         # the data plane must not move its traffic onto it
        sa.emit(event)
        old.status = ChildStatus.REKEYED
        old.collision = None
        if redundant:
            # our new SA is the redundant one: we delete it, the peer deletes the old SA
            sa.stats["child_rekey_collision_lost"] += 1
            sa.queue_front(ChildDeleteInitiator([self.state.spi_in], reason="redundant after a rekey collision"))
        else:
            if col is not None:
                sa.stats["child_rekey_collision_won"] += 1
            sa.queue_front(ChildDeleteInitiator([old.spi_in], reason="rekeyed"))

    def failed(self, sa: IkeSA, notify: int, reason: str, now: float, *, detail: tuple[str, ...] = (),
               received: bool = False) -> None:
        old = self.old
        if old is not None and old in sa.children:
            if old.collision is not None:
                # the peer's crossing rekey succeeded: it replaces the old SA and will delete it
                old.status = ChildStatus.REKEYED
            else:
                old.status = ChildStatus.INSTALLED
                if notify == Notify.TEMPORARY_FAILURE:
                    old.rekey_at = now + 2.0 + sa.config.retransmit_timeout    # RFC 7296 §2.25: retry later
            old.collision = None
        super().failed(sa, notify, reason, now, detail=detail, received=received)


class ChildRekeyResponder(ChildCreateResponder):
    def __init__(self) -> None:
        super().__init__()
        self.old: ChildState | None = None

    def candidates(self, sa: IkeSA) -> list[ChildConfig]:
        assert self.old is not None
        return [self.old.config]

    def rekey_of(self) -> int | None:
        return self.old.spi_in if self.old is not None else None

    def process_request(self, sa: IkeSA, msg: Message, now: float) -> list[Payload]:
        n = msg.notifies(Notify.REKEY_SA)[0]
        old = sa.find_child(spi_out=int.from_bytes(n.spi, "big")) if len(n.spi) == 4 else None
        if old is None or n.protocol != old.config.protocol:
            sa.stats["rekey_unknown_child"] += 1
            return [NotifyPayload(Notify.CHILD_SA_NOT_FOUND, b"", n.protocol, n.spi)]
        if old.status in (ChildStatus.REKEYED, ChildStatus.DELETING):
            sa.stats["rekey_temporary_failure"] += 1
            return [NotifyPayload(Notify.TEMPORARY_FAILURE)]
        self.old = old
        self.name = old.config.name
        return super().process_request(sa, msg, now)

    def created(self, sa: IkeSA, state: ChildState, nonce_i: bytes, nonce_r: bytes) -> None:
        assert self.old is not None
        if self.old.status == ChildStatus.REKEYING:
            self.old.collision = (nonce_i, nonce_r, state)      # settled when our own rekey completes
        else:
            self.old.status = ChildStatus.REKEYED               # the peer deletes it next


__all__ = ["ChildRekeyInitiator", "ChildRekeyResponder"]
