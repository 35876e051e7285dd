"""The rules of fastpath/classify.py (``kio_classify`` in C) stated in plain Python, written apart from the C,
so that tests/test_fastpath_classify.py checks the one against the other on random SPDs."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from fastpath.io import kio
from fastpath.shm import D


@dataclass
class Flow:
    family: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    df: bool


def parse_flow(p: bytes) -> Flow | None:
    if not p:
        return None
    if p[0] >> 4 == 4:
        if len(p) < 20:
            return None
        ihl = (p[0] & 15) * 4
        tot = struct.unpack_from("!H", p, 2)[0]
        if ihl < 20 or ihl > len(p) or tot < ihl or tot > len(p):
            return None
        proto = p[9]
        frag = struct.unpack_from("!H", p, 6)[0]
        sport = dport = 0
        if frag & 0x1FFF == 0 and proto in (6, 17, 132) and tot >= ihl + 4:
            sport, dport = struct.unpack_from("!HH", p, ihl)
        return Flow(4, str(ipaddress.IPv4Address(p[12:16])), str(ipaddress.IPv4Address(p[16:20])), proto, sport,
                    dport, bool(p[6] & 0x40))
    if p[0] >> 4 == 6:
        if len(p) < 40:
            return None
        end = 40 + struct.unpack_from("!H", p, 4)[0]
        if end > len(p):
            return None
        nh, off, first = p[6], 40, True
        while nh in (0, 43, 60, 44):
            if off + 8 > end:
                return None
            if nh == 44:
                first = struct.unpack_from("!H", p, off + 2)[0] & 0xFFF8 == 0
                nh, off = p[off], off + 8
            else:
                nh, off = p[off], off + 8 + p[off + 1] * 8
        if off > end:
            return None
        sport = dport = 0
        if first and nh in (6, 17, 132) and end >= off + 4:
            sport, dport = struct.unpack_from("!HH", p, off)
        return Flow(6, str(ipaddress.IPv6Address(p[8:24])), str(ipaddress.IPv6Address(p[24:40])), nh, sport, dport,
                    True)
    return None


def classify_model(region, packet: bytes, ike_ports: tuple[int, int] = (500, 4500)) -> tuple[int, int]:
    """(verdict, SA slot or NO_SA) for one packet, by the rules above (no MTU check)."""
    f = parse_flow(packet)
    if f is None:
        return kio.V_MALFORMED, kio.NO_SA
    ports = {500, 4500, *ike_ports}
    if f.proto == 17 and (f.sport in ports or f.dport in ports):
        return kio.V_BYPASS, kio.NO_SA
    m = region.lookup_policy(f.src, f.dst, f.proto, f.sport, f.dport)
    if m is None:
        return kio.V_NO_POLICY, kio.NO_SA
    if m.action == D["IPSG_SPD_BYPASS"]:
        return kio.V_BYPASS, kio.NO_SA
    if m.action != D["IPSG_SPD_PROTECT"]:
        return kio.V_DISCARD, kio.NO_SA
    if not m.sas:
        return kio.V_ACQUIRE, kio.NO_SA
    return kio.V_PROTECT, m.sas[0]
