"""Classic pcap files: reading any byte order and timestamp resolution, writing raw IP.

Only what offline ESP processing needs: records come out as (timestamp, frame)
and ``ip_payload`` turns a frame of a supported link type into the IP packet
it carries.  pcapng is recognised only so it can be refused with a hint, since
silently misreading it would look like a corrupt file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# Link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0           # BSD loopback: 4-byte address family in host order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW as some platforms wrote it into files before LINKTYPE_RAW existed.
_LEGACY_RAW = (12, 14)

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

_MAGIC_USEC = 0xA1B2C3D4
_MAGIC_NSEC = 0xA1B23C4D
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)   # 802.1Q, 802.1ad (QinQ), legacy QinQ
_BSD_AF_INET6 = (24, 28, 30)            # NetBSD/OpenBSD, FreeBSD, Darwin

# Largest record we believe (IP tops out at 64 KiB bar jumbograms); beyond this a
# length field is corrupt, and reading it would allocate that much up front.
MAX_RECORD = 4 << 20
DEFAULT_SNAPLEN = 262144


class PcapError(Exception):
    """The file is not a pcap we can read, or a record in it is damaged."""


class PcapFormatError(PcapError):
    """The file as a whole cannot be read (pcapng, unknown magic, short header)."""


class PcapRecordError(PcapError):
    """Record ``number`` (1-based) is truncated or corrupt; earlier ones were fine."""

    def __init__(self, number: int, reason: str):
        self.number = number
        self.reason = reason
        super().__init__(f"packet {number}: {reason}")


@dataclass
class Record:
    ts_sec: int
    ts_frac: int        # micro- or nanoseconds, as the file's resolution says
    data: bytes
    orig_len: int


class PcapReader:
    """Iterate the records of a classic pcap file.

    Iteration raises ``PcapRecordError`` at the first damaged record, after
    yielding every record before it, so callers can keep what was good.
    """

    def __init__(self, f: BinaryIO):
        self._f = f
        head = f.read(24)
        if head[:4] == _PCAPNG_SHB:
            raise PcapFormatError("this is a pcapng file, which is not supported; "
                                  "convert it first, e.g. editcap -F pcap IN.pcapng OUT.pcap")
        if len(head) < 24:
            raise PcapFormatError(f"not a pcap file: {len(head)}-byte file is shorter than the 24-byte pcap header")
        for endian in ("<", ">"):
            (magic,) = struct.unpack(endian + "I", head[:4])
            if magic in (_MAGIC_USEC, _MAGIC_NSEC):
                break
        else:
            raise PcapFormatError(f"not a pcap file: unknown magic number 0x{head[:4].hex()}")
        self.endian = endian
        self.nanosecond = magic == _MAGIC_NSEC
        _, self.version_major, self.version_minor, _, _, self.snaplen, network = struct.unpack(
            endian + "IHHiIII", head)
        # The upper bits of the link-type field carry FCS information (pcap-linktype(7)).
        self.linktype = network & 0x0FFFFFFF
        self._rec = struct.Struct(endian + "IIII")

    def __iter__(self) -> Iterator[Record]:
        number = 0
        while True:
            hdr = self._f.read(16)
            if not hdr:
                return
            number += 1
            if len(hdr) < 16:
                raise PcapRecordError(number, f"truncated record header ({len(hdr)} of 16 bytes)")
            ts_sec, ts_frac, incl_len, orig_len = self._rec.unpack(hdr)
            if incl_len > MAX_RECORD:
                raise PcapRecordError(number, f"corrupt record header (captured length {incl_len} bytes)")
            if ts_frac >= (1_000_000_000 if self.nanosecond else 1_000_000):
                raise PcapRecordError(number, "corrupt record header (sub-second timestamp out of range)")
            data = self._f.read(incl_len)
            if len(data) < incl_len:
                raise PcapRecordError(number, f"truncated packet data ({len(data)} of {incl_len} bytes)")
            yield Record(ts_sec, ts_frac, data, orig_len)


class PcapWriter:
    """Write a little-endian classic pcap with one link type."""

    def __init__(self, f: BinaryIO, linktype: int = LINKTYPE_RAW, nanosecond: bool = False,
                 snaplen: int = DEFAULT_SNAPLEN):
        self._f = f
        self.snaplen = snaplen
        magic = _MAGIC_NSEC if nanosecond else _MAGIC_USEC
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self._rec = struct.Struct("<IIII")
        self.count = 0

    def write(self, ts_sec: int, ts_frac: int, data: bytes) -> None:
        self._f.write(self._rec.pack(ts_sec, ts_frac, len(data), len(data)))
        self._f.write(data)
        self.count += 1


def is_supported_linktype(linktype: int) -> bool:
    return linktype in LINKTYPE_NAMES or linktype in _LEGACY_RAW


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"link type {linktype}")


def _trim_ip(pkt: bytes) -> bytes:
    """Drop link-layer padding (Ethernet pads to 60 bytes) after the IP packet.

    Only shortens; a packet claiming more than it has is left for the engine
    to call malformed.  An IPv6 payload length of 0 (jumbogram) is left alone.
    """
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        total = int.from_bytes(pkt[2:4], "big")
        if 20 <= total < len(pkt):
            return pkt[:total]
    elif len(pkt) >= 40 and pkt[0] >> 4 == 6:
        plen = int.from_bytes(pkt[4:6], "big")
        if plen and 40 + plen < len(pkt):
            return pkt[:40 + plen]
    return pkt


def _by_version(pkt: bytes) -> bytes | None:
    return pkt if pkt and pkt[0] >> 4 in (4, 6) else None


def _by_ethertype(ethertype: int, pkt: bytes) -> bytes | None:
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return _trim_ip(pkt)
    return None


def ip_payload(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet a frame carries, or None when it carries something else (ARP, LLDP...)."""
    if linktype in (LINKTYPE_RAW, *_LEGACY_RAW):
        return _by_version(frame)
    if linktype == LINKTYPE_IPV4:
        return frame if frame[:1] and frame[0] >> 4 == 4 else None
    if linktype == LINKTYPE_IPV6:
        return frame if frame[:1] and frame[0] >> 4 == 6 else None
    if linktype == LINKTYPE_ETHERNET:
        pos = 12
        while len(frame) >= pos + 2:
            ethertype = int.from_bytes(frame[pos:pos + 2], "big")
            if ethertype in _VLAN_TAGS:
                pos += 4
                continue
            return _by_ethertype(ethertype, frame[pos + 2:])
        return None
    if linktype == LINKTYPE_LINUX_SLL:
        return _by_ethertype(int.from_bytes(frame[14:16], "big"), frame[16:]) if len(frame) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return _by_ethertype(int.from_bytes(frame[0:2], "big"), frame[20:]) if len(frame) >= 20 else None
    if linktype == LINKTYPE_NULL:
        if len(frame) < 4:
            return None
        # Written in the capturing host's byte order, which need not be the file's.
        family = int.from_bytes(frame[:4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(frame[:4], "big")
        if family == 2 or family in _BSD_AF_INET6:
            return _by_version(frame[4:])
        return None
    raise PcapFormatError(f"unsupported {linktype_name(linktype)}")
