"""IP header helpers, checked against scapy's independent header code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from fastpath import iphdr
from fastpath.iphdr import CE, ECT0, ECT1, NOT_ECT, MalformedPacket

V4A, V4B = "192.0.2.1", "198.51.100.7"
V6A, V6B = "2001:db8::1", "2001:db8:ffff::2"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(1, 255), st.integers(0, 255),
       st.binary(min_size=0, max_size=40), st.booleans())
def test_ipv4_checksum_matches_scapy(tos, ident, ttl, proto, payload, df):
    pkt = bytes(IP(src=V4A, dst=V4B, tos=tos, id=ident, ttl=ttl, proto=proto, flags="DF" if df else 0) / payload)
    assert iphdr.ipv4_checksum(pkt[:20]) == int.from_bytes(pkt[10:12], "big")
    built = iphdr.build_ipv4(pkt[12:16], pkt[16:20], proto, len(payload), tos, ident, ttl, df)
    assert built == pkt[:20]


def test_ipv4_checksum_with_options():
    pkt = bytes(IP(src=V4A, dst=V4B, options=b"\x01\x01\x01\x00") / TCP())
    assert iphdr.ipv4_checksum(pkt[:24]) == int.from_bytes(pkt[10:12], "big")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFFF), st.integers(0, 255), st.binary(max_size=40))
def test_build_ipv6_matches_scapy(tc, fl, hlim, payload):
    pkt = bytes(IPv6(src=V6A, dst=V6B, tc=tc, fl=fl, hlim=hlim, nh=59) / payload)
    assert iphdr.build_ipv6(pkt[8:24], pkt[24:40], 59, len(payload), tc, fl, hlim) == pkt[:40]
    info = iphdr.parse_ip(pkt)
    assert (info.version, info.tos, info.flow, info.total_len, info.proto) == (6, tc, fl, len(pkt), 59)


@pytest.mark.parametrize("ip", [IP(src=V4A, dst=V4B), IPv6(src=V6A, dst=V6B)])
def test_udp_checksum_matches_scapy(ip):
    pkt = bytes(ip / UDP(sport=4500, dport=4500) / Raw(b"\x01\x02\x03\x04\x05"))
    hl = 20 if ip.version == 4 else 40
    udp = pkt[hl:]
    ref = int.from_bytes(udp[6:8], "big")
    built = iphdr.build_udp(_src(pkt), _dst(pkt), 4500, 4500, udp[8:], checksum=True)
    assert int.from_bytes(built[6:8], "big") == ref
    assert built[:6] == udp[:6]


def _src(pkt: bytes) -> bytes:
    return pkt[12:16] if pkt[0] >> 4 == 4 else pkt[8:24]


def _dst(pkt: bytes) -> bytes:
    return pkt[16:20] if pkt[0] >> 4 == 4 else pkt[24:40]


def test_parse_ipv4():
    pkt = bytes(IP(src=V4A, dst=V4B, tos=0xB9, flags="DF", options=b"\x01\x01\x01\x00") / UDP(sport=1, dport=2))
    info = iphdr.parse_ip(pkt)
    assert (info.version, info.hdr_len, info.total_len, info.proto, info.proto_off) == (4, 24, len(pkt), 17, 9)
    assert info.src == bytes([192, 0, 2, 1]) and info.tos == 0xB9 and info.frag & iphdr.IPV4_DF
    assert iphdr.transport_ports(pkt, info) == (17, 1, 2)


@pytest.mark.parametrize("bad", [
    b"",
    b"\x45" + bytes(10),                                    # short
    bytes(IP(src=V4A, dst=V4B) / b"xx")[:-1],              # total length > len
    bytes(IP(src=V4A, dst=V4B) / b"xx") + b"\x00",          # total length < len
    b"\x44" + bytes(IP(src=V4A, dst=V4B))[1:],              # IHL 4
    b"\x55" + bytes(IP(src=V4A, dst=V4B))[1:],              # version 5
    bytes(IPv6(src=V6A, dst=V6B) / b"abc")[:-1],
    bytes(IPv6(src=V6A, dst=V6B, nh=0) / b"\x06\x05"),      # truncated hop-by-hop
])
def test_parse_rejects_malformed(bad):
    with pytest.raises(MalformedPacket):
        iphdr.parse_ip(bad)


def test_parse_allows_trailing_padding_when_not_exact():
    pkt = bytes(IP(src=V4A, dst=V4B) / b"abc")
    assert iphdr.parse_ip(pkt + b"\x01\x02", exact=False).total_len == len(pkt)


def test_ipv6_extension_walk():
    pkt = bytes(IPv6(src=V6A, dst=V6B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[V6B])
                / IPv6ExtHdrDestOpt() / TCP(sport=1000, dport=443))
    out = iphdr.parse_ip(pkt, iphdr.EXT_OUTBOUND)
    assert out.proto == 60 and out.hdr_len == 40 + 8 + 24
    assert out.proto_off == 48        # the routing header's next-header byte
    inb = iphdr.parse_ip(pkt, iphdr.EXT_INBOUND)
    assert inb.proto == 6 and inb.hdr_len == 40 + 8 + 24 + 8 and inb.proto_off == 72
    plain = iphdr.parse_ip(pkt, frozenset())
    assert plain.proto == 0 and plain.proto_off == 6
    assert iphdr.transport_ports(pkt, plain) == (6, 1000, 443)


def test_ports_of_fragments_and_other_protocols():
    first = bytes(IPv6(src=V6A, dst=V6B) / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=7, dport=8) / (b"x" * 8))
    later = bytes(IPv6(src=V6A, dst=V6B) / IPv6ExtHdrFragment(offset=5, nh=17) / (b"x" * 8))
    # An IPv6 Fragment header is not walked: the protocol is 44, without ports.
    assert iphdr.transport_ports(first, iphdr.parse_ip(first, frozenset())) == (44, None, None)
    assert iphdr.transport_ports(later, iphdr.parse_ip(later, frozenset())) == (44, None, None)
    trunc = bytes(IPv6(src=V6A, dst=V6B, nh=60) / (b"\x06\x04" + bytes(14)))   # claims 40 bytes, has 16
    assert iphdr.transport_ports(trunc, iphdr.parse_ip(trunc, frozenset())) == (60, None, None)
    v4frag = bytes(IP(src=V4A, dst=V4B, proto=6, frag=10) / (b"y" * 8))
    assert iphdr.transport_ports(v4frag, iphdr.parse_ip(v4frag)) == (6, None, None)
    sctp = bytes(IP(src=V4A, dst=V4B) / SCTP(sport=36412, dport=38412))
    assert iphdr.transport_ports(sctp, iphdr.parse_ip(sctp)) == (132, 36412, 38412)
    icmp = bytes(IP(src=V4A, dst=V4B) / ICMP())
    assert iphdr.transport_ports(icmp, iphdr.parse_ip(icmp)) == (1, None, None)
    short = bytes(IP(src=V4A, dst=V4B, proto=6) / b"\x00\x01")
    assert iphdr.transport_ports(short, iphdr.parse_ip(short)) == (6, None, None)


# RFC 6040 section 4.2, Figure 4: rows = inner, columns = outer Not-ECT, ECT(0), ECT(1), CE.
RFC6040_DECAP = {
    NOT_ECT: (NOT_ECT, NOT_ECT, NOT_ECT, None),
    ECT0: (ECT0, ECT0, ECT1, CE),
    ECT1: (ECT1, ECT1, ECT1, CE),
    CE: (CE, CE, CE, CE),
}


@pytest.mark.parametrize("inner", list(RFC6040_DECAP))
def test_ecn_decap_table(inner):
    for outer, want in zip((NOT_ECT, ECT0, ECT1, CE), RFC6040_DECAP[inner], strict=True):
        assert iphdr.ecn_decap(outer, inner) == want


def test_ecn_encap_modes():
    for ecn in (NOT_ECT, ECT0, ECT1, CE):
        assert iphdr.ecn_encap(ecn, "normal") == ecn
        assert iphdr.ecn_encap(ecn, "compat") == NOT_ECT


def test_set_tos_v4_and_v6():
    v4 = bytearray(bytes(IP(src=V4A, dst=V4B, tos=0x02) / b"abcd"))
    iphdr.set_tos(v4, 0x03)
    assert IP(bytes(v4)).tos == 3
    assert iphdr.ipv4_checksum(v4[:20]) == int.from_bytes(v4[10:12], "big")
    v6 = bytearray(bytes(IPv6(src=V6A, dst=V6B, tc=0xA2, fl=0xABCDE) / b"abcd"))
    iphdr.set_tos(v6, 0xA3)
    parsed = IPv6(bytes(v6))
    assert (parsed.tc, parsed.fl, parsed.version) == (0xA3, 0xABCDE, 6)
