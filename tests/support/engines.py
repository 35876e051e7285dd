"""The ESP engines as the engine tests drive them: which are present (and which have AH), the algorithm
pairs every one must support, one engine call over a list of packets."""

from __future__ import annotations

from cdefs.sa import SA, Direction
from fastpath.batch import Batch
from fastpath.engines import create, discover, present_names
from fastpath.status import Status

ENGINES = present_names()
# The present engines that serve AH (all AH algorithms: the AH tests run every one over each).
AH_ENGINES = [i.name for i in discover() if i.present and i.ah_algorithms]

# (enc, integ) pairs the engines must support; the order is the report order.
ALGORITHMS: list[tuple[str, str | None]] = [
    ("aes-gcm-128", None), ("aes-gcm-192", None), ("aes-gcm-256", None),
    ("aes-gmac-128", None), ("aes-gmac-192", None), ("aes-gmac-256", None),
    ("chacha20-poly1305", None),
    ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-128", "hmac-sha384-192"), ("aes-cbc-128", "hmac-sha512-256"),
    ("aes-cbc-256", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha384-192"), ("aes-cbc-256", "hmac-sha512-256"),
    ("null", "hmac-sha256-128"),
]


def alg_id(alg: tuple[str, str | None]) -> str:
    return alg[0] if alg[1] is None else f"{alg[0]}+{alg[1]}"


def new_engine(name: str, capacity: int = 256):
    return create(name, capacity=capacity)


def run(engine, direction: str, packets: list[bytes], sa: list[int] | int = 0,
        mtu: int = 2000) -> list[tuple[Status, bytes, int]]:
    """One engine call over all packets; (status, packet, sa index) per packet."""
    batch = Batch(capacity=max(1, len(packets)), mtu=mtu)
    idx = sa if isinstance(sa, list) else [sa] * len(packets)
    for p, i in zip(packets, idx, strict=True):
        batch.append(p, i)
    (engine.outbound if direction == "out" else engine.inbound)(batch)
    return [(Status(int(batch.status[i])), batch.packet(i), int(batch.sa[i])) for i in range(batch.n)]


def install(engine, index: int, sa: SA, direction: str) -> None:
    engine.add_sa(index, sa, Direction.OUT if direction == "out" else Direction.IN)
