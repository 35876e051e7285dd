"""IPv4/IPv6 header helpers for the pure-Python ESP path.

Parsing returns plain offsets into the packet rather than objects, so the
same walk serves outbound transport mode (where ESP is inserted), inbound
(where ESP is found) and selector checks (where the transport ports are).
Everything here is bytes in, bytes out; nothing raises on hostile input
except through the documented ``None`` / ``MalformedPacket`` results.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTO_HOPOPTS = 0
PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ESP = 50
PROTO_AH = 51
PROTO_ICMPV6 = 58
PROTO_NONE = 59
PROTO_DSTOPTS = 60
PROTO_SCTP = 132

PORT_PROTOS = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)
ICMP_PROTOS = (PROTO_ICMP, PROTO_ICMPV6)

# Extension headers each caller skips.  Outbound transport mode inserts ESP
# after Hop-by-Hop and Routing (docs/esp.md); inbound also skips Destination
# Options to reach ESP, and so does the selector walk to reach the ports.
EXT_OUTBOUND = frozenset((PROTO_HOPOPTS, PROTO_ROUTING))
EXT_INBOUND = frozenset((PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS))

IPV4_DF = 0x4000
IPV4_MF = 0x2000
IPV4_OFFSET_MASK = 0x1FFF

# RFC 3168 ECN codepoints.
NOT_ECT = 0
ECT1 = 1
ECT0 = 2
CE = 3


class MalformedPacket(ValueError):
    """The bytes are not a well-formed IP packet."""


@dataclass
class IPInfo:
    """Where things are in one IP packet.

    ``hdr_len`` covers the base header plus the extension headers that the
    walk skipped; ``proto`` is the protocol after them and ``proto_off`` the
    byte holding it (IPv4: 9; IPv6: 6 or the next-header byte of the last
    skipped extension header).
    """

    version: int
    hdr_len: int
    total_len: int
    proto: int
    proto_off: int
    src: bytes
    dst: bytes
    tos: int            # IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN)
    frag: int = 0       # IPv4 flags+offset word (0 for IPv6)
    flow: int = 0       # IPv6 flow label


def inet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 ones'-complement checksum of ``data`` (odd length zero-padded)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_checksum(hdr: bytes | bytearray) -> int:
    """Header checksum of an IPv4 header, ignoring whatever is in its checksum field."""
    h = bytearray(hdr)
    h[10:12] = b"\x00\x00"
    return inet_checksum(h)


def fix_ipv4_checksum(hdr: bytearray) -> None:
    """Recompute the checksum of the IPv4 header at the start of ``hdr`` in place."""
    ihl = (hdr[0] & 0x0F) * 4
    hdr[10:12] = b"\x00\x00"
    hdr[10:12] = struct.pack("!H", inet_checksum(hdr[:ihl]))


def udp_checksum(src: bytes, dst: bytes, udp: bytes | bytearray) -> int:
    """UDP checksum with the IPv4 or IPv6 pseudo-header (0 becomes 0xffff, RFC 768)."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, len(udp))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(udp), PROTO_UDP)
    c = inet_checksum(pseudo + bytes(udp))
    return c or 0xFFFF


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, checksum: bool) -> bytes:
    """A UDP header for ``payload``; the checksum is 0 unless asked for (IPv6 needs one)."""
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    if not checksum:
        return hdr
    return hdr[:6] + struct.pack("!H", udp_checksum(src, dst, hdr + payload))


def walk_ext(pkt: bytes, nh: int, off: int, skip: frozenset[int], limit: int) -> tuple[int, int, int]:
    """Skip IPv6 extension headers in ``skip`` from ``off``.

    ``skip`` holds types with the generic length field (Hop-by-Hop, Routing,
    Destination Options).  Returns (protocol after them, offset of the
    payload, offset of the byte that names that protocol).  Raises MalformedPacket if a header runs past
    ``limit``.
    """
    proto_off = 6
    while nh in skip:
        if off + 8 > limit:
            raise MalformedPacket("truncated IPv6 extension header")
        ext_len = (pkt[off + 1] + 1) * 8     # all of 0, 43, 60 count 8-byte units
        if off + ext_len > limit:
            raise MalformedPacket("truncated IPv6 extension header")
        proto_off = off
        nh = pkt[off]
        off += ext_len
    return nh, off, proto_off


def parse_ip(pkt: bytes, skip: frozenset[int] = EXT_OUTBOUND, exact: bool = True) -> IPInfo:
    """Parse the IP header at the start of ``pkt``.

    ``exact``: the total length must equal ``len(pkt)`` (a packet handed to
    an engine); otherwise it may be shorter (an inner packet followed by TFC
    padding).  Raises MalformedPacket.
    """
    n = len(pkt)
    if n < 1:
        raise MalformedPacket("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if n < 20:
            raise MalformedPacket("short IPv4 header")
        ihl = (pkt[0] & 0x0F) * 4
        total = (pkt[2] << 8) | pkt[3]
        if ihl < 20 or total < ihl or total > n or (exact and total != n):
            raise MalformedPacket("bad IPv4 header or total length")
        frag = (pkt[6] << 8) | pkt[7]
        return IPInfo(4, ihl, total, pkt[9], 9, bytes(pkt[12:16]), bytes(pkt[16:20]), pkt[1], frag=frag)
    if version == 6:
        if n < 40:
            raise MalformedPacket("short IPv6 header")
        plen = (pkt[4] << 8) | pkt[5]
        total = 40 + plen
        # A zero payload length means a jumbogram, which ESP does not carry here.
        if plen == 0 and n > 40:
            raise MalformedPacket("IPv6 jumbogram")
        if total > n or (exact and total != n):
            raise MalformedPacket("bad IPv6 payload length")
        word = int.from_bytes(pkt[0:4], "big")
        nh, off, proto_off = walk_ext(pkt, pkt[6], 40, skip, total)
        return IPInfo(6, off, total, nh, proto_off, bytes(pkt[8:24]), bytes(pkt[24:40]),
                      (word >> 20) & 0xFF, flow=word & 0xFFFFF)
    raise MalformedPacket(f"IP version {version}")


def build_ipv4(src: bytes, dst: bytes, proto: int, payload_len: int, tos: int, ident: int,
               ttl: int, df: bool) -> bytes:
    """A 20-byte IPv4 header without options, checksum filled in."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, ident & 0xFFFF,
                                IPV4_DF if df else 0, ttl, proto, 0, src, dst))
    fix_ipv4_checksum(hdr)
    return bytes(hdr)


def build_ipv6(src: bytes, dst: bytes, nh: int, payload_len: int, tclass: int, flow: int, hlim: int) -> bytes:
    """A 40-byte IPv6 header."""
    word = (6 << 28) | ((tclass & 0xFF) << 20) | (flow & 0xFFFFF)
    return struct.pack("!IHBB16s16s", word, payload_len, nh, hlim, src, dst)


def set_tos(pkt: bytearray, tos: int) -> None:
    """Rewrite the IPv4 TOS / IPv6 traffic class in place (IPv4 checksum updated)."""
    if pkt[0] >> 4 == 4:
        pkt[1] = tos
        fix_ipv4_checksum(pkt)
    else:
        pkt[0] = 0x60 | (tos >> 4)
        pkt[1] = ((tos & 0x0F) << 4) | (pkt[1] & 0x0F)


def ecn_encap(inner_ecn: int, mode: str) -> int:
    """Outer ECN field for an inner one (RFC 6040 4.1): normal copies, compat clears."""
    return inner_ecn if mode == "normal" else NOT_ECT


def ecn_decap(outer_ecn: int, inner_ecn: int) -> int | None:
    """Inner ECN after decapsulation (RFC 6040 4.2), or None: drop the packet.

    Only two outer codepoints carry information the inner lacks: CE (congestion
    seen on the tunnel path) and ECT(1) over ECT(0).  CE over a Not-ECT inner
    packet cannot be expressed, so the packet is dropped.
    """
    if outer_ecn == CE:
        return None if inner_ecn == NOT_ECT else CE
    if outer_ecn == ECT1 and inner_ecn == ECT0:
        return ECT1
    return inner_ecn


def transport_ports(pkt: bytes, info: IPInfo) -> tuple[int, int | None, int | None]:
    """(protocol, source port, destination port) of a parsed packet, for selectors.

    Ports are None when the protocol has none (ICMP type/code are not read as
    ports), or when they are not in this packet (a later IPv4 fragment, a
    truncated header).  IPv6 Hop-by-Hop, Routing and Destination Options
    headers are walked; any other extension header (Fragment, AH) is the
    protocol, without ports.
    """
    proto, off = info.proto, info.hdr_len
    if info.version == 4:
        if info.frag & IPV4_OFFSET_MASK:
            return proto, None, None
    else:
        # Stop at a truncated header with its own type as the protocol.
        while proto in EXT_INBOUND:
            if off + 8 > info.total_len or (pkt[off + 1] + 1) * 8 > info.total_len - off:
                return proto, None, None
            proto, off = pkt[off], off + (pkt[off + 1] + 1) * 8
    if proto in PORT_PROTOS and off + 4 <= info.total_len:
        sport, dport = struct.unpack_from("!HH", pkt, off)
        return proto, sport, dport
    return proto, None, None

