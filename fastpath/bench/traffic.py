"""Synthetic clear-side traffic for ``ipsecgw bench esp`` (and tests): valid inner IPv4/UDP packets."""

from __future__ import annotations

import ipaddress
import struct

from fastpath.iphdr import ipv4_checksum

IMIX = ((64, 7), (576, 4), (1500, 1))   # the classic 7:4:1 simple IMIX


def udp4(size: int, src: str = "10.1.0.1", dst: str = "10.2.0.1", sport: int = 1024, dport: int = 5001,
         ident: int = 0) -> bytes:
    """An IPv4/UDP packet of exactly ``size`` bytes (>= 28)."""
    if size < 28:
        raise ValueError("an IPv4/UDP packet is at least 28 bytes")
    payload = bytes((ident + i) & 0xFF for i in range(size - 28))
    udp = struct.pack("!HHHH", sport, dport, size - 20, 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, ident & 0xFFFF, 0x4000, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", ipv4_checksum(hdr)) + hdr[12:]
    return hdr + udp


def sizes_for(spec: str | int, n: int) -> list[int]:
    """Packet sizes for a benchmark cell: a fixed size, or 'imix' interleaved 7:4:1."""
    if spec == "imix":
        pattern = [s for s, w in IMIX for _ in range(w)]
        # Interleave so every batch carries the mix, not runs of one size.
        pattern = [pattern[(i * 5) % len(pattern)] for i in range(len(pattern))]
        return [pattern[i % len(pattern)] for i in range(n)]
    return [int(spec)] * n


def packets(spec: str | int, n: int) -> list[bytes]:
    return [udp4(size, ident=i) for i, size in enumerate(sizes_for(spec, n))]

