"""Fuzz target: the inbound AH parser and ICV check in C (cdefs/esp/ah_core.c), against the reference.

An input is an outer packet; it goes, in one batch with a control packet, through ``inbound`` of each
C engine that has AH and of the reference engine (fastpath/ah_ref.py, the model the C follows), each with
the same AH SAs installed afresh.

Oracle: nothing raises; no packet ends ``INTERNAL``; the C engines give the reference's status and SA
index for the packet and, when it is ``ok``, the reference's bytes; the control packet (never mutated)
still verifies to its inner packet.
"""

from __future__ import annotations

import random

import atheris
from support.ah import make_ah_sa

from cdefs.algorithms import AH_INTEG_ALGS
from cdefs.sa import Direction, Mode
from fastpath.batch import Batch
from fastpath.engines import create, discover
from fastpath.status import Status
from fuzz.harness import FuzzFailure

C_NAMES = [i.name for i in discover() if i.present and i.ah_algorithms and i.name != "reference"]
CONTROL = 7

# Fixed keys, so a crasher replays the same way: HMAC and GMAC, tunnel and transport, IPv4 and IPv6, ESN.
_KEYS = random.Random("ah_inbound")
SA_SPECS = [
    dict(integ="hmac-sha256-128", spi=0x3001),
    dict(integ="hmac-sha1-96", spi=0x3002, mode=Mode.TRANSPORT),
    dict(integ="aes-gmac-128", spi=0x3003, family=6),
    dict(integ="hmac-sha512-256", spi=0x3004, family=6, mode=Mode.TRANSPORT, esn=True, seq=(1 << 32) - 4),
]
SAS = [make_ah_sa(s["integ"], integ_key=_KEYS.randbytes(AH_INTEG_ALGS[s["integ"]].key_len),
                  **{k: v for k, v in s.items() if k != "integ"}) for s in SA_SPECS]
CONTROL_SA = make_ah_sa("hmac-sha256-128", integ_key=_KEYS.randbytes(32), spi=0x3008, replay_window=0)
if not C_NAMES:
    raise SystemExit("ah_inbound: no C engine with AH is available")


def _engine(name: str):
    e = create(name, capacity=16)
    for i, sa in enumerate(SAS):
        e.add_sa(i, sa, Direction.IN)
    e.add_sa(CONTROL, CONTROL_SA, Direction.IN)
    return e


def _sender():
    e = create("reference", capacity=16)
    for i, sa in enumerate(SAS):
        e.add_sa(i, sa, Direction.OUT)
    e.add_sa(CONTROL, CONTROL_SA, Direction.OUT)
    return e


SENDER = _sender()
_CONTROL_INNER = None
_control_wire: list[bytes] = []


def _inner(sa, payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    if sa.mode is Mode.TRANSPORT:
        src, dst = str(sa.src), str(sa.dst)
    else:
        src, dst = ("10.1.0.1", "10.2.0.2") if sa.src.version == 4 else ("fd00:1::1", "fd00:2::2")
    ip = IP(src=src, dst=dst) if src.count(".") == 3 else IPv6(src=src, dst=dst)
    return bytes(ip / UDP(sport=1, dport=2) / payload)


def _protect(index: int, plain: bytes) -> bytes:
    b = Batch(capacity=1, mtu=2048)
    b.append(plain, index)
    SENDER.outbound(b)
    assert Status(int(b.status[0])) == Status.OK
    return b.packet(0)


def _control() -> tuple[bytes, bytes]:
    global _CONTROL_INNER
    if _CONTROL_INNER is None:
        _CONTROL_INNER = _inner(CONTROL_SA, b"control")
        _control_wire.append(_protect(CONTROL, _CONTROL_INNER))
    return _control_wire[0], _CONTROL_INNER


def _run(name: str, pkts: list[bytes]) -> list[tuple[Status, bytes, int]]:
    e = _engine(name)        # afresh: replay state and counters start from the same place in every engine
    try:
        b = Batch(capacity=len(pkts), mtu=2048)
        for p in pkts:
            b.append(p[:b.max_packet], 0)
        e.inbound(b)
        return [(Status(int(b.status[i])), b.packet(i), int(b.sa[i])) for i in range(b.n)]
    finally:
        e.close()


def one_input(data: bytes) -> None:
    if not data:
        return
    ctl, ctl_inner = _control()
    pkts = [data, ctl]
    want = _run("reference", pkts)
    for name in C_NAMES:
        got = _run(name, pkts)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            if g[0] == Status.INTERNAL:
                raise FuzzFailure(f"{name}: packet {k} INTERNAL")
            if (g[0], g[2]) != (w[0], w[2]) or (g[0] == Status.OK and g[1] != w[1]):
                raise FuzzFailure(f"{name}: packet {k}: {g[0].name}/{g[2]} where the reference says "
                                  f"{w[0].name}/{w[2]}")
        if got[1][:2] != (Status.OK, ctl_inner):
            raise FuzzFailure(f"{name}: the control packet came out {got[1][0].name}")


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """Mostly edits of the AH packet's own fields (lengths, next header, SPI, sequence number, ICV, IPv4
    options, IPv6 extension headers and their option types) or of one byte a router may change."""
    rng = random.Random(seed)
    if not data or rng.randrange(10) == 0:
        return atheris.Mutate(data, max_size)
    b = bytearray(data)
    which = rng.randrange(5)
    if which == 0 and b:
        off = rng.randrange(min(len(b), 80))            # the headers: IP, extension headers, AH
        b[off] = rng.choice([0, 1, 0x20, 0x3E, 43, 44, 50, 51, 59, 60, 0xFF, rng.randrange(256)])
    elif which == 1 and b:
        b = b[:rng.randrange(len(b) + 1)]                # truncated anywhere
    elif which == 2:
        b += rng.randbytes(rng.randrange(1, 24))         # bytes past the IP length
    elif which == 3 and len(b) >= 4:
        off = rng.randrange(len(b) - 1)
        b[off:off + 2] = rng.choice([0, 1, 20, 40, len(b), 0xFFFF, rng.randrange(1 << 16)]).to_bytes(2, "big")
    else:
        return atheris.Mutate(bytes(b), max_size)
    return bytes(b)[:max_size]


def seeds() -> list[bytes]:
    """Packets the reference protects for each SA (with IPv4 options and IPv6 extension headers), and the
    same with a router's edits."""
    from scapy.layers.inet import IP, UDP, IPOption_Router_Alert, IPOption_RR
    from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    out = []
    for i, sa in enumerate(SAS):
        plains = [_inner(sa, b"seed")]
        if sa.mode is Mode.TRANSPORT and sa.src.version == 4:
            plains.append(bytes(IP(src=str(sa.src), dst=str(sa.dst), options=[
                IPOption_RR(routers=["192.0.2.77"]), IPOption_Router_Alert()]) / UDP() / b"options"))
        if sa.mode is Mode.TRANSPORT and sa.src.version == 6:
            plains.append(bytes(IPv6(src=str(sa.src), dst=str(sa.dst))
                                / IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"mutable!")])
                                / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"x")])
                                / UDP() / b"extension headers"))
        for plain in plains:
            wire = _protect(i, plain)
            out.append(wire)
            moved = bytearray(wire)
            moved[8 if wire[0] >> 4 == 4 else 7] = 9       # TTL / hop limit: mutable, must still verify
            out.append(bytes(moved))
    return out
