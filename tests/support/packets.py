"""IP, UDP and ESP-carrying packets built from the RFCs (RFC 791, 8200, 768, 4303, 3948), not from
fastpath.iphdr, so that a test never checks an engine against the code that engine itself uses."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from support.netns_tools import inet_checksum


def ipv4(src, dst, proto: int, payload: bytes, *, tos: int = 0, ttl: int = 64, ident: int = 0x1234,
         df: bool = False) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0,
                                ttl, proto, 0, ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed))
    hdr[10:12] = struct.pack("!H", inet_checksum(bytes(hdr)))
    return bytes(hdr) + payload


def ipv6(src, dst, nh: int, payload: bytes, *, tclass: int = 0, flow: int = 0, hlim: int = 64) -> bytes:
    first = (6 << 28) | (tclass << 20) | flow
    return struct.pack("!IHBB16s16s", first, len(payload), nh, hlim, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def udp(src, dst, sport: int, dport: int, payload: bytes, checksum: bool = True) -> bytes:
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if not checksum:
        return seg
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    pseudo = s + d + (struct.pack("!BBH", 0, 17, length) if len(s) == 4 else struct.pack("!IxxxB", length, 17))
    c = inet_checksum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def outer_esp(src, dst, esp: bytes, *, udp_encap: bool = False, sport: int = 4500, dport: int = 4500) -> bytes:
    """An outer IP packet (version from the addresses) carrying ESP, optionally in UDP (RFC 3948)."""
    v6 = ipaddress.ip_address(src).version == 6
    if udp_encap:
        esp = udp(src, dst, sport, dport, esp, checksum=v6)
    proto = 17 if udp_encap else 50
    return ipv6(src, dst, proto, esp) if v6 else ipv4(src, dst, proto, esp)


@dataclass
class Inner:
    """A plain IP packet the tests send through a tunnel or transport SA."""

    data: bytes
    version: int


def inner_packet(version: int, payload: bytes, *, proto: int = 17, src=None, dst=None, tos: int = 0,
                 flow: int = 0) -> Inner:
    """A UDP (or other protocol) packet with valid headers around ``payload``."""
    if version == 4:
        src, dst = src or "10.1.0.1", dst or "10.2.0.2"
        body = udp(src, dst, 1234, 5678, payload) if proto == 17 else payload
        return Inner(ipv4(src, dst, proto, body, tos=tos, df=True), 4)
    src, dst = src or "fd00:1::1", dst or "fd00:2::2"
    body = udp(src, dst, 1234, 5678, payload) if proto == 17 else payload
    return Inner(ipv6(src, dst, proto, body, tclass=tos, flow=flow), 6)
