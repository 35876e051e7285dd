"""fastpath._kio on real kernel objects: a TUN device and UDP/raw sockets in a private network namespace.

Each call moves a whole batch; the tests check what the kernel saw or delivered against packets built
here (and scapy for checksums), not against kio's own parsing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess

import numpy as np
import pytest
from support.strongswan import in_netns

from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)
if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
    pytest.skip("needs root and /dev/net/tun", allow_module_level=True)

from scapy.layers.inet import IP, UDP  # noqa: E402

from fastpath.io.sockets import esp_socket, send_socket  # noqa: E402
from fastpath.io.tun import Tun  # noqa: E402

NS = f"kio{os.getpid() % 100000}"


@pytest.fixture(scope="module", autouse=True)
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", NS, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", NS, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    yield
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def ns(fn):
    return in_netns(NS, fn)


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(IP(src=src, dst=dst, ttl=64) / UDP(sport=sport, dport=dport) / payload)


def test_tun_read_many_per_call_and_write() -> None:
    def body():
        tun = Tun("kiot0", 1400, ["10.9.0.1/24"], ["10.8.0.0/24"])
        try:
            b = Batch(64, mtu=1500)
            kb = kio.KBatch(b)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sent = [os.urandom(10 + i) for i in range(40)]
            for i, p in enumerate(sent):
                tx.sendto(p, ("10.8.0.7", 7000 + i))          # routed into the TUN
            n = kb.tun_read(tun.fileno())
            # one call took every waiting packet (plus any IPv6 the kernel itself sent to the new device)
            got = [b.packet(i) for i in range(n) if b.packet(i)[0] >> 4 == 4]
            assert len(got) == 40
            for i, raw in enumerate(got):
                pkt = IP(raw)
                assert pkt.dst == "10.8.0.7" and pkt[UDP].dport == 7000 + i and bytes(pkt[UDP].payload) == sent[i]
            assert kb.tun_read(tun.fileno()) == 0              # nothing left, no error
            # write back: packets addressed to us arrive on a local socket; a selector picks which
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("10.9.0.1", 9000))
            rx.settimeout(2)
            b.clear()
            for i in range(10):
                b.append(udp_packet("10.8.0.7", "10.9.0.1", 5000, 9000, bytes([i]) * 20))
            sel = np.zeros(64, dtype=np.uint8)
            sel[1::2] = 1
            assert kb.tun_write(tun.fileno(), 10, sel, 1) == 5
            assert sorted(rx.recv(100)[0] for _ in range(5)) == [1, 3, 5, 7, 9]
        finally:
            tun.close(remove=True)
    ns(body)


def test_recv_udp4_builds_outer_headers_and_keeps_ike_out() -> None:
    def body():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("192.0.2.1", 14500))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("192.0.2.2", 14600))
        esp = [struct.pack("!II", 0x1000 + i, i + 1) + os.urandom(40 + i) for i in range(20)]
        for i, p in enumerate(esp):
            tx.sendto(p, ("192.0.2.1", 14500))
            if i == 5:
                tx.sendto(bytes(4) + b"IKE message", ("192.0.2.1", 14500))     # non-ESP marker
            if i == 9:
                tx.sendto(b"\xff", ("192.0.2.1", 14500))                        # NAT keepalive
            if i == 12:
                tx.sendto(b"IPSGPROB" + (0x1122334455667788).to_bytes(8, "big"), ("192.0.2.1", 14500))
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        n, ike, probe = kb.recv_udp4(rx.fileno(), socket.inet_aton("192.0.2.1"), 14500)
        assert (n, ike, probe) == (20, 1, 0x1122334455667788)
        for i in range(n):
            raw = b.packet(i)
            pkt = IP(raw)
            assert pkt.src == "192.0.2.2" and pkt.dst == "192.0.2.1" and pkt.proto == 17
            assert pkt[UDP].sport == 14600 and pkt[UDP].dport == 14500
            assert bytes(pkt[UDP].payload) == esp[i]
            assert pkt.len == len(raw) and pkt[UDP].len == len(raw) - 20
            again = IP(raw)
            del again.chksum
            assert IP(bytes(again)).chksum == pkt.chksum          # header checksum is right
        assert kb.recv_udp4(rx.fileno(), socket.inet_aton("192.0.2.1"), 14500) == (0, 0, 0)
    ns(body)


def test_send_raw_and_udp_and_recv_raw() -> None:
    def body():
        esp_rx = esp_socket()
        udp_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp_rx.bind(("192.0.2.2", 4500))
        udp_rx.settimeout(2)
        udp_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp_tx.bind(("192.0.2.1", 4500))
        raw = send_socket()
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        plain, encap = [], []
        for i in range(30):
            body_ = struct.pack("!II", 0x2000 + i, i + 1) + os.urandom(50)
            if i % 3 == 0:
                p = udp_packet("192.0.2.1", "192.0.2.2", 4500, 4500, body_)
                encap.append(body_)
            else:
                p = bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50, id=i + 1) / body_)
                plain.append(p)
            b.append(p)
        sel = np.zeros(64, dtype=np.uint8)
        sent, failed = kb.send(raw.fileno(), 30, sel, 0, udp_fd=udp_tx.fileno(), udp_port=4500)
        assert (sent, failed) == (30, 0)
        assert [udp_rx.recv(2000) for _ in encap] == encap
        rb = Batch(64, mtu=1500)
        rk = kio.KBatch(rb)
        n = rk.recv_raw4(esp_rx.fileno())
        assert n == len(plain)
        for i in range(n):
            got = IP(rb.packet(i))
            want = IP(plain[i])
            assert got.proto == 50 and got.id == want.id and bytes(got.payload) == bytes(want.payload)
            assert str(ipaddress.ip_address(got.src)) == "192.0.2.1"
    ns(body)


def test_move_compacts_in_place() -> None:
    b = Batch(16, mtu=200)
    kb = kio.KBatch(b)
    for i in range(10):
        b.append(bytes([i]) * (20 + i), sa=i)
    sel = np.zeros(16, dtype=np.uint8)
    sel[[2, 3, 7]] = 5
    assert kb.move_to(10, sel, 5, kb, 0) == 3
    assert [b.packet(i) for i in range(3)] == [bytes([i]) * (20 + i) for i in (2, 3, 7)]
    assert b.sa[:3].tolist() == [2, 3, 7]
    other = Batch(2, mtu=200)
    assert kb.move_to(10, np.full(16, 1, dtype=np.uint8), 1, kio.KBatch(other), 0) == 2   # bounded by capacity


# -- outer IPv6 -------------------------------------------------------------------------------------

A6, B6 = "2001:db8:6::1", "2001:db8:6::2"
IPV6_TCLASS = 67


def _v6_addrs() -> None:
    for a in (A6, B6):      # nodad: usable at once, not "tentative" for a second
        subprocess.run(["ip", "-n", NS, "addr", "replace", f"{a}/128", "dev", "lo", "nodad"], check=True)


def test_recv_udp6_builds_ipv6_outer_headers_with_traffic_class() -> None:
    from scapy.layers.inet6 import IPv6

    _v6_addrs()

    def body():
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
        rx.bind((A6, 14500))
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        tx.bind((B6, 14600))
        tx.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, 0xB9)     # DSCP 46, ECN ECT(1)
        esp = [struct.pack("!II", 0x1000 + i, i + 1) + os.urandom(40 + i) for i in range(12)]
        for i, p in enumerate(esp):
            tx.sendto(p, (A6, 14500))
            if i == 3:
                tx.sendto(bytes(4) + b"IKE message", (A6, 14500))
            if i == 7:
                tx.sendto(b"\xff", (A6, 14500))
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        n, ike, probe = kb.recv_udp(rx.fileno(), socket.inet_pton(socket.AF_INET6, A6), 14500)
        assert (n, ike, probe) == (12, 1, 0)
        for i in range(n):
            raw = b.packet(i)
            p = IPv6(raw)
            assert (p.src, p.dst, p.nh, p.tc, p.plen) == (B6, A6, 17, 0xB9, len(raw) - 40)
            assert (p[UDP].sport, p[UDP].dport, p[UDP].len) == (14600, 14500, len(raw) - 40)
            assert bytes(p[UDP].payload) == esp[i]
    ns(body)


def test_send_dual_stack_batch_and_recv_raw6() -> None:
    """One batch of IPv4 and IPv6 packets, plain ESP and ESP-in-UDP: each leaves on the socket of its
    family and kind, and raw IPv6 ESP comes back with its header rebuilt (addresses, traffic class)."""
    from scapy.layers.inet6 import IPv6

    from fastpath.io.sockets import esp_socket6, send_socket6

    _v6_addrs()

    def body():
        esp4, esp6 = esp_socket(), esp_socket6()
        udp4_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp4_rx.bind(("192.0.2.2", 4500))
        udp6_rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp6_rx.bind((B6, 4500))
        for s in (udp4_rx, udp6_rx):
            s.settimeout(2)
        udp4_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp4_tx.bind(("192.0.2.1", 4500))
        udp6_tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp6_tx.bind((A6, 4500))
        raw4, raw6 = send_socket(), send_socket6()
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        plain4, plain6, enc4, enc6 = [], [], [], []
        for i in range(40):
            body_ = struct.pack("!II", 0x2000 + i, i + 1) + os.urandom(50 + i)
            kind = i % 4
            if kind == 0:
                p = bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50, id=i + 1) / body_)
                plain4.append(p)
            elif kind == 1:
                p = bytes(IPv6(src=A6, dst=B6, nh=50, tc=0x2A, fl=0x12345, hlim=33) / body_)
                plain6.append(p)
            elif kind == 2:
                p = udp_packet("192.0.2.1", "192.0.2.2", 4500, 4500, body_)
                enc4.append(body_)
            else:
                p = bytes(IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=4500) / body_)
                enc6.append(body_)
            b.append(p)
        sel = np.zeros(64, dtype=np.uint8)
        for send in (kb.send, kb.send_gso):
            sent, failed = send(raw4.fileno(), 40, sel, 0, udp_fd=udp4_tx.fileno(), udp_port=4500,
                                raw6_fd=raw6.fileno(), udp6_fd=udp6_tx.fileno())
            assert (sent, failed) == (40, 0)
            assert [udp4_rx.recv(2000) for _ in enc4] == enc4
            assert [udp6_rx.recv(2000) for _ in enc6] == enc6
            rb = Batch(64, mtu=1500)
            rk = kio.KBatch(rb)
            assert rk.recv_raw4(esp4.fileno()) == len(plain4)
            assert [IP(rb.packet(i)).id for i in range(len(plain4))] == [IP(p).id for p in plain4]
            m = rk.recv_raw6(esp6.fileno(), start=len(plain4))
            assert m == len(plain6)
            for i in range(m):
                got, want = rb.packet(len(plain4) + i), IPv6(plain6[i])
                g = IPv6(got)
                assert (g.src, g.dst, g.nh, g.tc, g.plen) == (A6, B6, 50, 0x2A, len(got) - 40)
                assert bytes(g.payload) == bytes(want.payload)
        # without an IPv6 socket IPv6 packets are counted as failed, IPv4 ones still leave
        sent, failed = kb.send(raw4.fileno(), 40, sel, 0)
        assert (sent, failed) == (20, 20)
    ns(body)


def test_udp6_segment_send_and_gro_receive() -> None:
    from scapy.layers.inet6 import IPv6

    _v6_addrs()
    SOL_UDP, UDP_GRO = 17, 104

    def body():
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind((B6, 4500))
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
        rx.setblocking(False)
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        tx.bind((A6, 4500))
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        esp = [struct.pack("!II", 0x3000, i + 1) + os.urandom(992) for i in range(12)]
        esp.append(struct.pack("!II", 0x3000, 13) + os.urandom(100))
        for p in esp:
            b.append(bytes(IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=4500) / p))
        sel = np.zeros(64, dtype=np.uint8)
        assert kb.send_gso(-1, len(esp), sel, 0, udp6_fd=tx.fileno(), udp_port=4500) == (len(esp), 0)
        out = Batch(64, mtu=1500)
        ko = kio.KBatch(out)
        n, ike, probe, dropped = ko.recv_udp_gro(rx.fileno(), socket.inet_pton(socket.AF_INET6, B6), 4500,
                                                 kio.new_gro_scratch())
        assert (n, ike, probe, dropped) == (len(esp), 0, 0, 0)
        for i in range(n):
            p = IPv6(out.packet(i))
            assert (p.src, p.dst, p[UDP].sport, p[UDP].dport) == (A6, B6, 4500, 4500)
            assert bytes(p[UDP].payload) == esp[i] and p.plen == len(esp[i]) + 8
    ns(body)
