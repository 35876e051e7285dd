"""AH on kernel I/O's raw sockets, in a private network namespace: what the fastpath reads from an IP
protocol 51 socket must still carry everything AH's ICV covers.  IPv4 raw sockets give the whole packet;
IPv6 ones strip the IPv6 header and the extension headers in front of AH, which kio_recv_ah6 puts back
from the control messages.  The oracle is scapy's AH: a packet scapy protected and sent must come back
byte for byte (apart from what the kernel cannot tell: flow label, hop limit, both mutable) and verify."""

from __future__ import annotations

import os
import subprocess

import pytest
from support.strongswan import in_netns

from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("needs root for a network namespace and raw sockets", allow_module_level=True)

from scapy.layers.inet import IP, UDP, IPOption_Router_Alert  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.ipsec import AH, SecurityAssociation  # noqa: E402

from fastpath.io.sockets import IPPROTO_AH, raw_socket4, raw_socket6, send_socket, send_socket6  # noqa: E402

NS = f"kah{os.getpid() % 100000}"
A6, B6 = "2001:db8:51::1", "2001:db8:51::2"
SA = SecurityAssociation(AH, spi=0x5151, auth_algo="SHA2-256-128", auth_key=bytes(range(32)))


@pytest.fixture(scope="module", autouse=True)
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", "192.0.2.1/32", "dev", "lo"],
                    ["addr", "add", "192.0.2.2/32", "dev", "lo"],
                    ["addr", "add", f"{A6}/128", "dev", "lo", "nodad"],
                    ["addr", "add", f"{B6}/128", "dev", "lo", "nodad"]):
            subprocess.run(["ip", "-n", NS, *cmd], check=True)
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def v6_cases() -> list[bytes]:
    udp = UDP(sport=5000, dport=6000) / b"through AH"
    # an option of an unknown type that may change en route (0x20 set: zeroed for the ICV) and one that
    # may not, in front of AH, so a header put back wrongly cannot verify
    mutable, fixed = PadN(otype=0x3E, optdata=b"\x01\x02\x03\x04"), PadN(otype=0x1E, optdata=b"fixd")
    inner = [
        IPv6(src=A6, dst=B6, tc=0x28) / udp,
        IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(options=[mutable]) / udp,
        IPv6(src=A6, dst=B6, tc=0xB8) / IPv6ExtHdrHopByHop(options=[fixed]) / IPv6ExtHdrDestOpt(options=[mutable])
        / IPv6ExtHdrRouting(addresses=[], segleft=0) / udp,
    ]
    return [bytes(SA.encrypt(p)) for p in inner]


def test_recv_ah6_puts_back_the_ipv6_header_and_extension_headers() -> None:
    sent = v6_cases()

    def body():
        rx, tx = raw_socket6(IPPROTO_AH), send_socket6()
        for p in sent:
            tx.sendto(p, (B6, 0))
        b = Batch(16, mtu=1500)
        n, left_out = kio.KBatch(b).recv_ah6(rx.fileno())
        return n, left_out, [b.packet(i) for i in range(n)]

    n, left_out, got = in_netns(NS, body)
    assert (n, left_out) == (len(sent), 0)
    for want, have in zip(sent, got, strict=True):
        assert have == want, (IPv6(want).summary(), IPv6(have).summary())
        assert IPv6(bytes(SA.decrypt(IPv6(have))))[UDP].load == b"through AH"


def test_recv_ah6_leaves_out_what_does_not_fit_and_counts_it() -> None:
    # extension headers larger than the slot's room in front of the packet plus what is left after it
    big = PadN(otype=0x1E, optdata=bytes(250))
    p = bytes(SA.encrypt(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(options=[big])
                         / IPv6ExtHdrDestOpt(options=[big, big]) / UDP(sport=1, dport=2) / bytes(100)))
    small = v6_cases()[0]

    def body():
        rx, tx = raw_socket6(IPPROTO_AH), send_socket6()
        tx.sendto(p, (B6, 0))
        tx.sendto(small, (B6, 0))
        b = Batch(8, mtu=256)
        n, left_out = kio.KBatch(b).recv_ah6(rx.fileno())
        return n, left_out, [b.packet(i) for i in range(n)]

    n, left_out, got = in_netns(NS, body)
    assert (n, left_out) == (1, 1)
    assert got == [small]                       # the gap the big one left is closed


def test_recv_raw4_keeps_ipv4_options_for_ah() -> None:
    inner = IP(src="192.0.2.1", dst="192.0.2.2", tos=0x10, options=[IPOption_Router_Alert()]) / UDP(
        sport=5000, dport=6000) / b"through AH over IPv4"
    sent = bytes(SA.encrypt(inner))

    def body():
        rx, tx = raw_socket4(IPPROTO_AH), send_socket()
        tx.sendto(sent, ("192.0.2.2", 0))
        b = Batch(8, mtu=1500)
        n = kio.KBatch(b).recv_raw4(rx.fileno())
        return [b.packet(i) for i in range(n)]

    (got,) = in_netns(NS, body)
    assert IP(got).options == IP(sent).options and IP(got).proto == 51
    assert IP(bytes(SA.decrypt(IP(got))))[UDP].load == b"through AH over IPv4"
