"""Configuration payloads (RFC 7296 §3.15) against scapy's IKEv2 CP layer, both ways."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.contrib.ikev2 import ConfigurationAttribute, IKEv2_CP

from control.ike import cp
from control.ike.constants import PayloadType
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import CPPayload, ParseError

ip = ipaddress.ip_address


def _wire(p: CPPayload) -> bytes:
    first, data = serialize_payloads([p])
    assert first == PayloadType.CP
    return data


def _ours(data: bytes) -> CPPayload:
    (p,) = parse_payloads(PayloadType.CP, data)
    assert isinstance(p, CPPayload)
    return p


def test_reply_as_scapy_reads_it():
    body = cp.reply(cp.ConfigReply([ip("10.99.0.7"), ip("fd00:99::7")], [ip("10.0.0.53"), ip("fd00::53")],
                                   [ipaddress.ip_network("10.2.0.0/16"), ipaddress.ip_network("fd00:2::/48")]))
    s = IKEv2_CP(_wire(body))
    assert s.CFGType == 2
    attrs = [(a.type, a.value) for a in s.attributes]
    assert (1, "10.99.0.7") in attrs
    assert (3, "10.0.0.53") in attrs
    assert (10, "fd00::53") in attrs
    v6 = [v for t, v in attrs if t == 8]
    assert v6 == [ip("fd00:99::7").packed + bytes([128])]
    s4 = [v for t, v in attrs if t == 13]
    assert s4 == [bytes([10, 2, 0, 0, 255, 255, 0, 0])]
    s6 = [v for t, v in attrs if t == 15]
    assert s6 == [ip("fd00:2::").packed + bytes([48])]


def test_request_as_scapy_reads_it():
    s = IKEv2_CP(_wire(cp.request([4, 6])))
    assert s.CFGType == 1
    assert sorted(a.type for a in s.attributes) == [1, 3, 8, 10]
    assert all(a.length == 0 for a in s.attributes)


def _attr(atype: int, text: str) -> ConfigurationAttribute:
    # scapy picks the address field by the length, which it only knows once set
    a = ip(text)
    return ConfigurationAttribute(type=atype, length=len(a.packed), value=text)


def test_scapy_reply_parsed():
    pkt = IKEv2_CP(CFGType=2, attributes=[
        _attr(1, "10.99.0.12"),
        _attr(2, "255.255.255.255"),
        _attr(3, "192.0.2.53"),
        _attr(10, "2001:db8::53"),
        ConfigurationAttribute(type=8, value=ip("2001:db8:99::5").packed + bytes([64])),
        ConfigurationAttribute(type=7, value=b"scapy"),
    ])
    got = cp.parse_reply(_ours(bytes(pkt)))
    assert got.addresses == [ip("10.99.0.12"), ip("2001:db8:99::5")]
    assert got.dns == [ip("192.0.2.53"), ip("2001:db8::53")]


def test_scapy_request_versions():
    pkt = IKEv2_CP(CFGType=1, attributes=[ConfigurationAttribute(type=8, value=b""),
                                          ConfigurationAttribute(type=3, value=b""),
                                          ConfigurationAttribute(type=1, value=b""),
                                          ConfigurationAttribute(type=8, value=b"")])
    assert cp.requested_versions(_ours(bytes(pkt))) == [6, 4]


@pytest.mark.parametrize("atype,value", [(1, b"\x0a\x00\x00"), (8, bytes(16)), (3, bytes(5)), (13, bytes(4)),
                                         (15, bytes(16) + b"\x81")])
def test_bad_attribute_values_refused(atype, value):
    pkt = IKEv2_CP(CFGType=2, attributes=[ConfigurationAttribute(type=atype, value=value)])
    with pytest.raises(ParseError):
        cp.parse_reply(_ours(bytes(pkt)))


def test_reply_must_be_a_reply():
    with pytest.raises(ParseError, match="CFG_REPLY"):
        cp.parse_reply(_ours(bytes(IKEv2_CP(CFGType=1))))


def test_truncated_attribute_refused():
    raw = bytearray(bytes(IKEv2_CP(CFGType=2, attributes=[_attr(1, "10.0.0.1")])))
    assert len(raw) == 16
    raw[-5] = 9         # the attribute's length now runs past the payload
    with pytest.raises(ParseError):
        _ours(bytes(raw))
