"""The offloads of fastpath._kio (cdefs/kio/kio_gso.c) against packets scapy builds and checks.

- TUN reads with IFF_VNET_HDR: a TCP super-segment (IPv4 and IPv6, with options and flags) is cut into
  MSS-sized packets whose lengths, IPv4 IDs, sequence numbers, flags and checksums scapy recomputes the
  same, and whose payloads join up to the original; a super-segment larger than the free slots stays
  pending; a lone packet's partial checksum is completed.
- TUN writes: in-order segments of one flow coalesce into one GSO super-segment (headers and the
  CHECKSUM_PARTIAL pseudo-header sum checked); gaps, bad checksums, other flows and flags end a run.
- Round trip through a real TUN in a namespace: a coalesced write is forwarded by the kernel back into
  the same TUN as a super-segment, and the read side cuts it back into the original segments.
- UDP_SEGMENT sends and UDP_GRO receives: one bundle on the wire side, the same datagrams after.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from support.strongswan import in_netns

from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)

NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 0, 1, 4
TS = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]


def vnet_hdr(flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def pseudo_partial(pkt: bytes) -> int:
    """What the kernel leaves in the TCP/UDP checksum field of a CHECKSUM_PARTIAL packet: the folded
    pseudo-header sum, not complemented."""
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        ph = pkt[12:20] + struct.pack("!BBH", 0, pkt[9], len(pkt) - ihl)
    else:
        ph = pkt[8:40] + struct.pack("!IxxxB", len(pkt) - 40, pkt[6])
    s = sum(struct.unpack(f"!{len(ph) // 2}H", ph))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def with_partial_csum(pkt: bytes, l4: int, off: int = 16) -> bytes:
    b = bytearray(pkt)
    struct.pack_into("!H", b, l4 + off, pseudo_partial(pkt))
    return bytes(b)


def rechecked(layer_pkt):
    """The packet as scapy would build it with every length and checksum recomputed."""
    p = layer_pkt.copy()
    for layer in (IP, TCP, UDP, IPv6):
        if layer in p:
            for f in ("chksum", "len", "plen"):
                if hasattr(p[layer], f) and f in p[layer].fields:
                    delattr(p[layer], f)
    return p.__class__(bytes(p))


def super_v4(payload: bytes, flags: str = "PA", ip_id: int = 100) -> bytes:
    return bytes(IP(src="10.1.0.2", dst="10.2.0.2", id=ip_id, ttl=63, flags="DF")
                 / TCP(sport=40000, dport=5201, seq=1_000_000, ack=77, flags=flags, window=500, options=TS)
                 / payload)


def super_v6(payload: bytes, flags: str = "PA") -> bytes:
    return bytes(IPv6(src="2001:db8:1::2", dst="2001:db8:2::2", hlim=63, fl=0x12345)
                 / TCP(sport=40000, dport=5201, seq=0xFFFFF000, ack=77, flags=flags, window=500, options=TS)
                 / payload)


def emit_all(raw: bytes, hdr: bytes, cap: int = 128) -> list[bytes]:
    rx = kio.TunRx()
    rx.load(hdr, raw)
    b = Batch(cap, mtu=1500)
    kb = kio.KBatch(b)
    n = rx.emit(kb)
    assert not rx.pending
    return [b.packet(i) for i in range(n)]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flags", ["PA", "FPA", "CA"])
def test_super_segment_is_cut_into_correct_packets(family: int, flags: str) -> None:
    payload = os.urandom(10_000)
    mss = 1000 if family == 4 else 1220
    raw = super_v4(payload, flags) if family == 4 else super_v6(payload, flags)
    l4 = 20 if family == 4 else 40
    hl = l4 + 32                      # 20-byte TCP header + 12 bytes of timestamp option
    raw = with_partial_csum(raw, l4)  # as the kernel hands it over: CHECKSUM_PARTIAL
    segs = emit_all(raw, vnet_hdr(NEEDS_CSUM, GSO_TCPV4 if family == 4 else GSO_TCPV6, hl, mss, l4, 16))
    assert len(segs) == -(-len(payload) // mss)
    orig = IP(raw) if family == 4 else IPv6(raw)
    joined = b""
    for k, s in enumerate(segs):
        p = IP(s) if family == 4 else IPv6(s)
        again = rechecked(p)
        assert p[TCP].chksum == again[TCP].chksum, f"segment {k}: TCP checksum"
        if family == 4:
            assert p.chksum == again.chksum and p.len == len(s) and p.id == (orig.id + k) & 0xFFFF
            assert (p.ttl, p.flags, p.src, p.dst) == (orig.ttl, orig.flags, orig.src, orig.dst)
        else:
            assert p.plen == len(s) - 40 and (p.fl, p.hlim, p.src) == (orig.fl, orig.hlim, orig.src)
        t = p[TCP]
        assert t.seq == (orig[TCP].seq + k * mss) & 0xFFFFFFFF
        assert (t.ack, t.window, t.options, t.sport, t.dport) == (77, 500, orig[TCP].options, 40000, 5201)
        last, first = k == len(segs) - 1, k == 0
        assert bool(t.flags & 0x08) == (last and "P" in flags)            # PSH on the last only
        assert bool(t.flags & 0x01) == (last and "F" in flags)            # FIN on the last only
        assert bool(t.flags & 0x80) == (first and "C" in flags)           # CWR on the first only
        assert len(s) <= hl + mss
        joined += bytes(t.payload)
    assert joined == payload


def test_super_segment_waits_for_free_slots() -> None:
    payload = os.urandom(8_000)
    raw = with_partial_csum(super_v4(payload), 20)
    rx = kio.TunRx()
    rx.load(vnet_hdr(NEEDS_CSUM, GSO_TCPV4, 52, 1000, 20, 16), raw)
    b = Batch(16, mtu=1500)
    kb = kio.KBatch(b)
    assert rx.emit(kb, 0, 3) == 3 and rx.pending
    assert rx.emit(kb, 3, 2) == 2 and rx.pending
    assert rx.emit(kb, 5) == 3 and not rx.pending
    assert b"".join(bytes(IP(b.packet(i))[TCP].payload) for i in range(8)) == payload
    assert [IP(b.packet(i))[TCP].seq - 1_000_000 for i in range(8)] == [k * 1000 for k in range(8)]


def test_lone_packet_partial_checksum_is_completed() -> None:
    udp = bytes(IP(src="10.1.0.2", dst="10.2.0.2") / UDP(sport=1, dport=2) / os.urandom(333))
    segs = emit_all(with_partial_csum(udp, 20, 6), vnet_hdr(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6))
    assert len(segs) == 1 and IP(segs[0])[UDP].chksum == rechecked(IP(udp))[UDP].chksum
    plain = bytes(IP(src="10.1.0.2", dst="10.2.0.2") / TCP() / b"x")
    assert emit_all(plain, bytes(10)) == [plain]


def test_unknown_gso_type_is_dropped_and_counted() -> None:
    rx = kio.TunRx()
    rx.load(vnet_hdr(0, 3, 28, 100, 0, 0), bytes(IP() / UDP() / bytes(500)))       # UFO: never offered
    assert rx.emit(kio.KBatch(Batch(8, mtu=1500))) == 0
    assert rx.counters()["bad"] == 1 and not rx.pending


# ---- coalescing --------------------------------------------------------------------------------------

def flow_segments(n: int, mss: int = 1000, family: int = 4, last: int | None = None, psh_last: bool = True,
                  seq0: int = 5000) -> list[bytes]:
    out = []
    for k in range(n):
        size = last if (last is not None and k == n - 1) else mss
        flags = "PA" if (psh_last and k == n - 1) else "A"
        tcp = TCP(sport=5201, dport=40000, seq=seq0 + k * mss, ack=9, flags=flags, window=300, options=TS)
        ip = (IP(src="10.2.0.2", dst="10.1.0.2", id=200 + k, ttl=62) if family == 4
              else IPv6(src="2001:db8:2::2", dst="2001:db8:1::2", hlim=62))
        out.append(bytes(ip / tcp / (bytes([k & 0xFF]) * size)))
    return out


def load(packets: list[bytes]) -> tuple[Batch, kio.KBatch, np.ndarray]:
    b = Batch(64, mtu=1500)
    for p in packets:
        b.append(p)
    return b, kio.KBatch(b), np.zeros(64, dtype=np.uint8)


@pytest.mark.parametrize("family", [4, 6])
def test_in_order_segments_coalesce_into_one_gso_packet(family: int) -> None:
    segs = flow_segments(8, family=family, last=400)
    b, kb, sel = load(segs)
    cnt, hdr = kio.coalesce(kb, len(segs), sel, 0, 0)
    assert cnt == 8
    l4 = 20 if family == 4 else 40
    flags, gso_type, hdr_len, gso_size, cs_start, cs_off = struct.unpack("<BBHHHH", hdr)
    assert (flags, gso_type, hdr_len, gso_size, cs_start, cs_off) == (
        NEEDS_CSUM, GSO_TCPV4 if family == 4 else GSO_TCPV6, l4 + 32, 1000, l4, 16)
    head = b.packet(0)[:l4 + 32]
    merged = head + b"".join(s[l4 + 32:] for s in segs)
    p = IP(merged) if family == 4 else IPv6(merged)
    if family == 4:
        assert p.len == len(merged) and p.chksum == rechecked(p).chksum and p.id == 200
    else:
        assert p.plen == len(merged) - 40
    assert p[TCP].chksum == pseudo_partial(merged)
    assert p[TCP].seq == 5000 and p[TCP].flags == "PA"              # the last segment's PSH
    assert bytes(p[TCP].payload) == b"".join(bytes(IP(s)[TCP].payload) if family == 4
                                             else bytes(IPv6(s)[TCP].payload) for s in segs)


def test_runs_end_where_gro_would_end_them() -> None:
    segs = flow_segments(6, psh_last=False)
    # a gap in sequence numbers after the third
    gap = segs[:3] + flow_segments(3, seq0=5000 + 4 * 1000, psh_last=False)
    b, kb, sel = load(gap)
    assert kio.coalesce(kb, 6, sel, 0, 0)[0] == 3
    # a corrupted checksum in the fourth
    bad = bytearray(segs[3])
    bad[-1] ^= 1
    b, kb, sel = load(segs[:3] + [bytes(bad)] + segs[4:])
    assert kio.coalesce(kb, 6, sel, 0, 0)[0] == 3
    # another flow in between
    other = bytes(IP(src="10.2.0.3", dst="10.1.0.2") / TCP(sport=1, dport=2, flags="A") / bytes(1000))
    b, kb, sel = load(segs[:2] + [other] + segs[2:])
    assert kio.coalesce(kb, 7, sel, 0, 0)[0] == 2
    # PSH closes a run (and is carried), a short segment closes a run
    pushed = flow_segments(2, psh_last=True) + flow_segments(2, seq0=7000, psh_last=False)
    b, kb, sel = load(pushed)
    assert kio.coalesce(kb, 4, sel, 0, 0)[0] == 2
    short = flow_segments(3, last=10, psh_last=False) + flow_segments(1, seq0=5000 + 2010, psh_last=False)
    b, kb, sel = load(short)
    assert kio.coalesce(kb, 4, sel, 0, 0)[0] == 3
    # unselected packets are skipped, not run breakers
    b, kb, sel = load(segs)
    sel[2] = 1
    assert kio.coalesce(kb, 6, sel, 0, 0)[0] == 2       # 0, 1 and then 3 does not follow 1's sequence
    # a lone valid TCP segment is written with DATA_VALID; non-TCP with nothing
    b, kb, sel = load([segs[0], bytes(IP() / UDP() / b"x")])
    assert kio.coalesce(kb, 2, sel, 0, 0) == (1, bytes([DATA_VALID]) + bytes(9))
    assert kio.coalesce(kb, 2, sel, 0, 1) == (1, bytes(10))


# ---- the kernel's view ------------------------------------------------------------------------------

NS = f"kgso{os.getpid() % 100000}"


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", NS, "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", NS, "addr", "add", "192.0.2.2/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    yield NS
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_round_trip_through_the_kernel(netns: str) -> None:
    """Coalesced write -> the kernel forwards the super-segment back into the TUN -> segmented read."""
    from fastpath.io.tun import Tun

    def body():
        tun = Tun("kgso0", 1400, ["10.9.0.1/24"], ["10.1.0.0/24", "10.2.0.0/24"], vnet=True)
        try:
            segs = flow_segments(20, mss=1300, last=77)
            b, kb, sel = load(segs)
            tx = kio.new_tun_tx()
            assert kb.tun_write_vnet(tun.fileno(), 20, sel, 0, tx) == 20
            assert (tx.writes, tx.packets, tx.failed) == (1, 20, 0)
            rx = kio.TunRx()
            out = Batch(64, mtu=1500)
            ko = kio.KBatch(out)
            n = 0
            for _ in range(200):
                n += ko.tun_read_vnet(tun.fileno(), rx, start=n)
                # (TCP only: forwarding out of the interface it came in on also sends an ICMP redirect)
                got = [IP(out.packet(i)) for i in range(n) if out.packet(i)[0] >> 4 == 4 and out.packet(i)[9] == 6]
                if len(got) >= 20:
                    break
                os.sched_yield()
            assert rx.counters()["gso_reads"] == 1            # it came back as one super-segment
            assert len(got) == 20
            for k, (g, s) in enumerate(zip(got, segs, strict=True)):
                want = IP(s)
                assert g.ttl == want.ttl - 1 and g.id == want.id
                assert bytes(g[TCP]) == bytes(want[TCP]), f"segment {k}"
                assert g.chksum == rechecked(g).chksum
        finally:
            tun.close(remove=True)
    in_netns(netns, body)


def test_udp_segment_send_and_gro_receive(netns: str) -> None:
    SOL_UDP, UDP_GRO = 17, 104

    def body():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("192.0.2.2", 4500))
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        rx.setblocking(False)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("192.0.2.1", 4500))
        b = Batch(64, mtu=1500)
        kb = kio.KBatch(b)
        esp = [struct.pack("!II", 0x3000, i + 1) + os.urandom(992) for i in range(12)]
        esp.append(struct.pack("!II", 0x3000, 13) + os.urandom(100))           # a shorter last one
        for p in esp:
            b.append(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500) / p))
        sel = np.zeros(64, dtype=np.uint8)
        assert kb.send_gso(-1, len(esp), sel, 0, udp_fd=tx.fileno(), udp_port=4500) == (len(esp), 0)
        # the receiver sees one bundle: 13 datagrams, segment size 1000 in the UDP_GRO message
        data, anc, _, _ = rx.recvmsg(65535, socket.CMSG_SPACE(4))
        assert data == b"".join(esp)
        assert [(lvl, typ) for lvl, typ, _ in anc] == [(SOL_UDP, UDP_GRO)]
        assert int.from_bytes(anc[0][2][:2], "little") == 1000
        # and kio_recv_udp4_gro splits such a bundle back into datagrams with outer headers
        assert kb.send_gso(-1, len(esp), sel, 0, udp_fd=tx.fileno(), udp_port=4500) == (len(esp), 0)
        out = Batch(64, mtu=1500)
        ko = kio.KBatch(out)
        n, ike, probe, dropped = ko.recv_udp4_gro(rx.fileno(), socket.inet_aton("192.0.2.2"), 4500,
                                                  kio.new_gro_scratch())
        assert (n, ike, probe, dropped) == (len(esp), 0, 0, 0)
        for i in range(n):
            p = IP(out.packet(i))
            assert (p.src, p.dst, p[UDP].sport, p[UDP].dport) == ("192.0.2.1", "192.0.2.2", 4500, 4500)
            assert bytes(p[UDP].payload) == esp[i] and p.chksum == rechecked(p).chksum
    in_netns(netns, body)
