"""The soak's abuse windows: now and then, from the peer gateway's namespace at one gateway, a burst of
garbage (support.garbage: random bytes to 500/4500, raw ESP with unknown SPIs and with the target's current
inbound SPI) and then a spoofed-source IKE_SA_INIT flood (support.ike_flood.Flood).  Each window is recorded
with its CLOCK_MONOTONIC start and end, so the verdict can set its losses apart."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from support.garbage import garbage_burst
from support.ike_flood import Flood, init_template, spoofed_ipv4


@dataclass
class Window:
    target: str             # "A" or "B"
    start: float
    end: float = 0.0
    sent: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Side:
    """Where abuse aimed at one gateway comes from: the other gateway's namespace and address."""

    name: str
    addr: str               # the target's outer address
    from_ns: str
    from_addr: str          # the peer's address, spoofed on the ESP with the known SPI


def abuse_window(side: Side, known_spi: int | None, *, garbage: int, flood_rate: int,
                 flood_seconds: float) -> Window:
    """One window against ``side``: the garbage burst, then the flood (a real IKE_SA_INIT request, a fresh
    initiator SPI in each copy)."""
    w = Window(side.name, time.monotonic())
    spis = (known_spi,) if known_spi is not None else ()
    w.sent.update(garbage_burst(side.from_ns, side.addr, garbage, known_spis=spis, peer=side.from_addr))
    template = init_template(side.addr)
    flood = Flood(side.from_ns, side.addr, [("ike_sa_init_flood", lambda: os.urandom(8) + template[8:])],
                  spoofed_ipv4, rate=flood_rate, seconds=flood_seconds).start()
    flood.join()
    w.sent.update(flood.sent)
    w.end = time.monotonic()
    return w
