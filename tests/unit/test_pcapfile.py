"""pcap reading/writing, checked against files scapy writes and reads."""

from __future__ import annotations

import io
import struct
from decimal import Decimal

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter as ScapyPcapWriter
from scapy.utils import rdpcap, wrpcap, wrpcapng

from fastpath import pcapfile
from fastpath.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    PcapFormatError,
    PcapReader,
    PcapRecordError,
    PcapWriter,
    ip_payload,
)

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}   # explicit: no ARP/route lookups
V4 = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"hello")
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=3, dport=4) / Raw(b"world!")


def read_all(path) -> tuple[PcapReader, list[pcapfile.Record]]:
    with open(path, "rb") as f:
        reader = PcapReader(f)
        return reader, list(reader)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_byte_orders_and_resolutions(tmp_path, endian, nano):
    path = tmp_path / "x.pcap"
    pkts = [Ether(**MACS) / V4, Ether(**MACS) / V6]
    pkts[0].time = Decimal("1700000000.123456")   # a float would round the nanoseconds
    pkts[1].time = Decimal("1700000001.5")
    w = ScapyPcapWriter(str(path), endianness=endian, nano=nano, linktype=LINKTYPE_ETHERNET)
    w.write(pkts)
    w.close()
    reader, recs = read_all(path)
    assert reader.linktype == LINKTYPE_ETHERNET and reader.nanosecond == nano and reader.endian == endian
    assert [r.data for r in recs] == [bytes(p) for p in pkts]
    assert recs[0].ts_sec == 1700000000
    assert recs[0].ts_frac == (123456000 if nano else 123456)
    assert recs[1].ts_frac == (500000000 if nano else 500000)
    assert recs[0].orig_len == len(bytes(pkts[0]))


def test_writer_output_is_what_scapy_reads(tmp_path):
    path = tmp_path / "out.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f, LINKTYPE_RAW, nanosecond=True)
        w.write(1700000000, 999999999, bytes(V4))
        w.write(1700000002, 1, bytes(V6))
    got = rdpcap(str(path))
    assert [bytes(p) for p in got] == [bytes(V4), bytes(V6)]
    assert got[0].time == pytest.approx(1700000000.999999999) and got[1].time == pytest.approx(1700000002.0)
    reader, recs = read_all(path)
    assert reader.linktype == LINKTYPE_RAW and [(r.ts_sec, r.ts_frac) for r in recs] == [
        (1700000000, 999999999), (1700000002, 1)]


def test_ethernet_vlan_qinq_and_padding():
    tagged = Ether(**MACS) / Dot1Q(vlan=7) / V4
    qinq = Ether(**MACS) / Dot1AD(vlan=100) / Dot1Q(vlan=7) / V6
    assert ip_payload(LINKTYPE_ETHERNET, bytes(tagged)) == bytes(V4)
    assert ip_payload(LINKTYPE_ETHERNET, bytes(qinq)) == bytes(V6)
    # A short IPv4 packet padded to Ethernet's 60-byte minimum: the padding is not IP.
    small = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)
    frame = bytes(Ether(**MACS) / small).ljust(60, b"\0")
    assert ip_payload(LINKTYPE_ETHERNET, frame) == bytes(small)
    assert ip_payload(LINKTYPE_ETHERNET, bytes(Ether(**MACS) / ARP())) is None
    assert ip_payload(LINKTYPE_ETHERNET, bytes(Ether(**MACS) / Dot1Q(vlan=1) / ARP())) is None
    assert ip_payload(LINKTYPE_ETHERNET, b"\x02" * 13) is None


def test_raw_and_cooked_link_types():
    assert ip_payload(LINKTYPE_RAW, bytes(V6)) == bytes(V6)
    assert ip_payload(LINKTYPE_RAW, b"\x00garbage") is None
    assert ip_payload(pcapfile.LINKTYPE_IPV4, bytes(V4)) == bytes(V4)
    assert ip_payload(pcapfile.LINKTYPE_IPV4, bytes(V6)) is None
    assert ip_payload(pcapfile.LINKTYPE_IPV6, bytes(V6)) == bytes(V6)
    assert ip_payload(pcapfile.LINKTYPE_LINUX_SLL, bytes(CookedLinux(proto=0x0800) / V4)) == bytes(V4)
    assert ip_payload(pcapfile.LINKTYPE_LINUX_SLL, bytes(CookedLinux(proto=0x0806) / ARP())) is None
    sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 1, 1, 0, 6, b"\x02" * 8) + bytes(V6)
    assert ip_payload(pcapfile.LINKTYPE_LINUX_SLL2, sll2) == bytes(V6)
    assert ip_payload(pcapfile.LINKTYPE_NULL, struct.pack("<I", 2) + bytes(V4)) == bytes(V4)
    assert ip_payload(pcapfile.LINKTYPE_NULL, struct.pack(">I", 30) + bytes(V6)) == bytes(V6)
    with pytest.raises(PcapFormatError, match="unsupported link type 147"):
        ip_payload(147, b"x")


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, 228])
def test_raw_files_from_scapy(tmp_path, linktype):
    path = tmp_path / "raw.pcap"
    wrpcap(str(path), [V4, V4], linktype=linktype)
    reader, recs = read_all(path)
    assert reader.linktype == linktype
    assert [ip_payload(linktype, r.data) for r in recs] == [bytes(V4)] * 2


def test_pcapng_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "x.pcapng"
    wrpcapng(str(path), [Ether(**MACS) / V4])
    with pytest.raises(PcapFormatError, match="pcapng .*not supported.*editcap -F pcap"):
        read_all(path)


@pytest.mark.parametrize("content, match", [
    (b"", "shorter than the 24-byte pcap header"),
    (b"\xd4\xc3\xb2", "shorter than the 24-byte pcap header"),
    (b"GIF89a" + b"\0" * 30, "unknown magic number 0x47494638"),
])
def test_not_a_pcap(content, match):
    with pytest.raises(PcapFormatError, match=match):
        PcapReader(io.BytesIO(content))


def _two_packet_file(tmp_path) -> bytes:
    path = tmp_path / "two.pcap"
    wrpcap(str(path), [V4, V6], linktype=LINKTYPE_RAW)
    return path.read_bytes()


@pytest.mark.parametrize("cut, reason", [
    (8, "packet 2: truncated record header (8 of 16 bytes)"),
    (16 + 10, "packet 2: truncated packet data (10 of 66 bytes)"),
])
def test_truncation_reports_the_packet_and_keeps_earlier_ones(tmp_path, cut, reason):
    data = _two_packet_file(tmp_path)
    first_end = 24 + 16 + len(bytes(V4))
    reader = PcapReader(io.BytesIO(data[:first_end + cut]))
    got = []
    with pytest.raises(PcapRecordError) as info:
        for rec in reader:
            got.append(rec.data)
    assert str(info.value) == reason and info.value.number == 2
    assert got == [bytes(V4)]


def test_corrupt_length_is_reported_not_allocated(tmp_path):
    data = bytearray(_two_packet_file(tmp_path))
    struct.pack_into("<I", data, 24 + 8, 0x7FFFFFFF)       # incl_len of packet 1
    with pytest.raises(PcapRecordError, match="packet 1: corrupt record header"):
        list(PcapReader(io.BytesIO(bytes(data))))


def test_clean_end_of_file(tmp_path):
    data = _two_packet_file(tmp_path)
    assert len(list(PcapReader(io.BytesIO(data)))) == 2
    assert list(PcapReader(io.BytesIO(data[:24]))) == []
