"""The fastpath's event ring, drained on a short poll: ACQUIREs start negotiations, a soft expiry a
rekey, a hard expiry or an exhausted sequence number a delete; alarms are logged.  The pump also
beats the control heartbeat the fastpath watches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from control.log_fields import child_fields
from control.policy_table import PolicyTable
from control.sa_records import ChildEntry
from control.shm import ControlRegion

__all__ = ["FastpathEventPump", "EventSink", "EVENT_POLL"]

log = logging.getLogger("ipsecgw.daemon")

EVENT_POLL = 0.05               # seconds between event ring drains


class EventSink(Protocol):
    """What the daemon does about the fastpath's events."""

    def acquire(self, conn_name: str, child_name: str, src: str, dst: str, proto: int) -> None: ...

    def soft_expired(self, child: ChildEntry, why: str) -> None: ...

    def hard_expired(self, child: ChildEntry, why: str) -> None: ...


class FastpathEventPump:
    def __init__(self, region: ControlRegion, spd: PolicyTable, slot_child: dict[int, ChildEntry], sink: EventSink,
                 count: Callable[[str], None]):
        self.region, self.spd, self.slot_child, self.sink, self.count = region, spd, slot_child, sink, count

    async def run(self, after: Callable[[], None]) -> None:
        """Drain forever; ``after`` runs after each drain (the daemon re-arms its timer)."""
        beat = 0.0
        while True:
            try:
                self.drain()
                after()
                if time.monotonic() - beat > 1.0:
                    self.region.heartbeat()
                    beat = time.monotonic()
            except Exception:    # noqa: BLE001
                log.exception("internal error draining fastpath events")
            await asyncio.sleep(EVENT_POLL)

    def drain(self) -> None:
        for ev in self.region.events(delete_expired=False):
            self.count(f"event_{ev.kind}")
            if ev.kind == "acquire":
                key = self.spd.key_of(ev.policy)
                if key is not None:
                    self.sink.acquire(key[0], key[1], ev.src, ev.dst, ev.proto)
                continue
            child = self.slot_child.get(ev.slot)
            if child is None or ev.sa_id not in (child.id_in, child.id_out):
                continue
            if ev.kind == "soft-expire":
                self.sink.soft_expired(child, f"soft limit reached after {ev.packets} packets / {ev.bytes} bytes")
            elif ev.kind in ("hard-expire", "seq-exhausted"):
                self.sink.hard_expired(child, f"{ev.kind} reported by the fastpath")
            elif ev.kind.startswith("alarm"):
                log.warning("CHILD SA %s of %s: %s: %d drops in the alarm window (SPI 0x%08x)", child.name,
                            child.conn, ev.kind, ev.packets, child.spi_in, extra=child_fields(child))
