"""The clear side through AF_PACKET (``gateway.fastpath.clear: af_packet``), end to end.

host A - gw A === gw B - host B in namespaces, ``ipsecgw run`` on both gateways; gateway A takes host A's
traffic off its LAN interface (v0b) with a packet socket instead of a TUN. Two pairings: A af_packet with B
on a TUN, and both af_packet over the IPv6 transit (inner IPv6 too: ping and TCP). Each carries the
ACQUIRE-raising first ping, 1,000-byte pings and a TCP stream checked by SHA-256 (host A's TCP has to learn
the path MTU from the ICMP fragmentation-needed that gateway A sends back onto the LAN). Also shown: no TUN
is created, the remote selectors are blackholed in the gateway's kernel (and nothing leaves in the clear:
tcpdump on the protected link sees no echo request), traffic without a policy still reaches the kernel, the
counters reach ``ipsecgw status``, ``reload`` blackholes a new connection's selectors, and a clean stop
removes the blackhole routes.

``test_packet_port_filter_neighbours_and_frames`` checks the pieces on one veth pair against frames built
and parsed by scapy: what the receive filter lets through (and the Ethernet padding trimmed), the Ethernet
header of what is sent, a neighbour learnt after start, resolution by ARP while a packet is held, a next hop
by route, and the too-big drop.  It runs ``python tests/e2e/test_gateway_afpacket.py port`` inside a namespace.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.* when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from support.gateway_harness import GatewayProc, acquire_lines  # noqa: E402
from support.netns_tools import V6, Tcpdump, Topology, gateway_config, with_other_connection  # noqa: E402

needs_root = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

TAG = f"ap{os.getpid() % 10000}"


def _routes(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, "route", "show", *args], capture_output=True, text=True).stdout


def _blackholes(ns: str) -> str:
    """Both families' blackhole routes in ns."""
    return "".join(subprocess.run(["ip", "-n", ns, fam, "route", "show", "type", "blackhole"], capture_output=True,
                                  text=True).stdout for fam in ("-4", "-6"))


def _leaked(cap: Tcpdump) -> int:
    cap.stop()
    r = subprocess.run(["tcpdump", "-n", "-r", str(cap.path)], capture_output=True, text=True)
    return len([line for line in r.stdout.splitlines() if line.strip()])


@pytest.mark.slow
@needs_root[0]
@needs_root[1]
@pytest.mark.parametrize("b_mode", ["tun", "af_packet"])
def test_af_packet_gateway_carries_ping_and_tcp(tmp_path: Path, b_mode: str) -> None:
    # both af_packet: over the IPv6 transit, carrying inner IPv4 and IPv6 (neighbour discovery on the LANs)
    v6 = b_mode == "af_packet"
    outer = "ipv6" if v6 else "ipv4"
    with Topology(TAG, ipv6=v6) as t:
        cfg_a, sock_a, _ = gateway_config(tmp_path, "A", encap=False, clear_interface=Topology.CLEAR_IF["A"],
                                          outer=outer)
        cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=False, outer=outer,
                                          clear_interface=Topology.CLEAR_IF["B"] if v6 else None)
        # both start at once (start-up is mostly Python imports on this loaded machine)
        A = GatewayProc(t.gA, cfg_a, sock_a, tmp_path / "gwA.log", wait=False)
        B = GatewayProc(t.gB, cfg_b, sock_b, tmp_path / "gwB.log", wait=False)
        try:
            A.wait_up()
            B.wait_up()
            assert "AF_PACKET on v0b" in A.text()
            assert "ipsgA" not in subprocess.run(["ip", "-n", t.gA, "link"], capture_output=True, text=True).stdout
            assert "blackhole 10.2.0.0/24" in _routes(t.gA, "type", "blackhole")

            first = t.ping(1, 0.1)
            assert first["got"] == [0], A.text()[-3000:]
            assert acquire_lines(A.text()), "the first ping must raise an ACQUIRE"
            A.wait_child()

            # protected traffic never leaves in the clear: the kernel's copy is blackholed
            cap = None
            if shutil.which("tcpdump"):
                cap = Tcpdump(t.gA, "v1a", tmp_path / "leak.pcap", "icmp and host 10.2.0.2")
            res = t.ping(20, 0.02, size=1000)
            assert len(res["got"]) == 20
            if cap is not None:
                assert _leaked(cap) == 0, "ICMP to 10.2.0.2 left gateway A in the clear"

            # 2 MiB with full-size segments: host A learns the path MTU from gateway A's ICMP on the LAN
            t.tcp(5311, 2 << 20)

            if v6:
                assert "blackhole fd00:2::/64" in _blackholes(t.gA)
                assert len(t.ping(10, 0.02, dst=V6["hB"], size=1000)["got"]) == 10
                t.tcp(5312, 1 << 20, dst=V6["hB"])      # IPv6 path MTU from gateway A's Packet Too Big

            # no policy: not the fastpath's business, the kernel still has its copy (gateway A's outer address)
            assert len(t.ping(3, 0.05, dst="192.0.2.1")["got"]) == 3

            st = A.json("status")
            io = st["io"]
            assert io["clear"] == "af_packet" and io["clear_interface"] == "v0b"
            ap = io["af_packet"]
            assert ap["rx_packets"] >= 21 and ap["tx_packets"] >= 21, ap
            assert ap["icmp_too_big"] >= 1, ap          # the PMTU discovery above
            assert "AF_PACKET on v0b" in A.cli("status")

            if b_mode == "tun":
                # reload: a new connection's remote selectors are blackholed too, and released on removal
                original = cfg_a.read_text()
                cfg_a.write_text(with_other_connection(original))
                try:
                    res = A.json("reload")
                    assert res["added"] == ["other"] and "10.9.0.0/24" in res["routes"]["added"]
                    assert "blackhole 10.9.0.0/24" in _routes(t.gA, "type", "blackhole")
                finally:
                    cfg_a.write_text(original)
                assert A.json("reload")["removed"] == ["other"]
                assert "10.9.0.0/24" not in _routes(t.gA, "type", "blackhole")
                assert len(t.ping(5, 0.02)["got"]) == 5
        finally:
            B.stop()
            assert A.stop() == 0
        text = A.text()
        assert "fastpath stopped (exit code 0)" in text
        assert "blackhole" not in _blackholes(t.gA)


# -- the pieces, on one veth pair -------------------------------------------------------------------------

@needs_root[0]
@pytest.mark.parametrize("vnet", [True, False], ids=["offload", "no-offload"])
def test_packet_port_filter_neighbours_and_frames(vnet: bool) -> None:
    pytest.importorskip("scapy")
    ns = f"apu{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "port", str(int(vnet))],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert out["blackhole"]
    # the filter: IPv4 and IPv6 unicast to us, nothing else (broadcast, ARP, 802.1Q, another MAC)
    assert out["received"] == out["expected"]
    # neighbours the kernel learnt after start are looked up on the first miss and sent at once
    assert out["sent_first"] == 3 and out["held_first"] == 0
    f = out["frames"]
    assert f["10.9.0.2"] == {"dst": "02:00:00:00:00:02", "src": out["mac"], "type": 0x0800, "same": True}
    assert f["10.7.0.5"]["dst"] == "02:00:00:00:00:02"                  # next hop by route: 10.9.0.2
    assert out["arp_who_has"] == "10.9.0.7"                             # resolution for the held packet
    assert f["10.9.0.7"] == {"dst": "02:00:00:00:00:07", "src": out["mac"], "type": 0x0800, "same": True}
    assert f["fd00:9::2"]["type"] == 0x86DD and f["fd00:9::2"]["dst"] == "02:00:00:00:00:62"
    c = out["counters"]
    # 4 single packets, and a 4-segment TCP run: one GSO frame with offload, 4 frames without
    assert c["too_big"] == 1 and c["no_neighbour_dropped"] == 0 and c["held"] == 1, c
    assert c["tx_packets"] == 8 and c["tx_frames"] == (5 if vnet else 8), c
    assert not out["blackhole_after"]
    if vnet:
        assert out["tcp_sent"] == 4 and out["tcp_frames"] == 1
        assert out["tcp_rx"] == [[20 + 20 + 4000, True, "02:00:00:00:00:02"]]
    else:
        assert out["tcp_sent"] == 4 and out["tcp_frames"] == 4
        assert [r[0] for r in out["tcp_rx"]] == [1040] * 4


def _port_check(vnet: bool) -> None:
    """Inside a fresh namespace: p0 (PacketPort, 10.9.0.1/24) <-> p1 (frames injected and captured)."""
    from scapy.all import ARP, IP, TCP, UDP, Dot1Q, Ether, IPv6, raw

    from fastpath.batch import Batch
    from fastpath.io import kio
    from fastpath.io.afpacket import PacketPort

    def ip(*a: str) -> None:
        subprocess.run(["ip", *a], check=True, capture_output=True)

    ip("link", "set", "lo", "up")
    ip("link", "add", "p0", "type", "veth", "peer", "name", "p1")
    ip("addr", "add", "10.9.0.1/24", "dev", "p0")
    ip("-6", "addr", "add", "fd00:9::1/64", "dev", "p0", "nodad")
    ip("link", "set", "p0", "up")
    ip("link", "set", "p1", "up")
    ip("route", "add", "10.7.0.0/24", "via", "10.9.0.2")
    port = PacketPort("p0", routes=["10.8.0.0/24"], hold=8, vnet=vnet)
    out: dict = {"mac": port.mac, "blackhole": "10.8.0.0/24" in subprocess.run(
        ["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True).stdout}
    p1 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    p1.bind(("p1", 3))
    p1.setblocking(False)

    def capture(wait: float = 0.3) -> list[bytes]:
        frames, end = [], time.monotonic() + wait
        while time.monotonic() < end:
            if select.select([p1], [], [], 0.02)[0]:
                data, addr = p1.recvfrom(65535)
                if addr[2] != socket.PACKET_OUTGOING:
                    frames.append(data)
        return frames

    v4 = raw(IP(src="10.9.0.5", dst="10.8.0.9") / UDP(sport=1, dport=2) / b"abcd")
    v6 = raw(IPv6(src="fd00:9::5", dst="fd00:8::9") / UDP(sport=1, dport=2) / b"xyz")
    me = port.mac
    h = "02:00:00:00:00:05"
    for fr in (Ether(dst=me, src=h, type=0x0800) / v4,                     # short: padded to 60 bytes
               Ether(dst="ff:ff:ff:ff:ff:ff", src=h, type=0x0800) / v4,
               Ether(dst=me, src=h) / ARP(psrc="10.9.0.5", pdst="10.9.0.1"),
               Ether(dst=me, src=h) / Dot1Q(vlan=5, type=0x0800) / v4,
               Ether(dst="02:00:00:00:00:99", src=h, type=0x0800) / v4,
               Ether(dst=me, src=h, type=0x86DD) / v6):
        data = raw(fr)
        p1.send(data + bytes(max(0, 60 - len(data))))
    time.sleep(0.2)
    b = Batch(16, mtu=2000)
    kb = kio.KBatch(b)
    rx = kio.TunRx()
    n = port.read(kb, rx)
    out["received"] = [b.packet(i).hex() for i in range(n)]
    out["expected"] = [v4.hex(), v6.hex()]
    capture(0.1)

    # transmit: a neighbour learnt after start, a next hop by route, an IPv6 neighbour, one too big
    ip("neigh", "replace", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "p0", "nud", "permanent")
    ip("-6", "neigh", "replace", "fd00:9::2", "lladdr", "02:00:00:00:00:62", "dev", "p0", "nud", "permanent")
    pkts = {"10.9.0.2": raw(IP(src="10.8.0.9", dst="10.9.0.2") / UDP(sport=3, dport=4) / b"one"),
            "10.7.0.5": raw(IP(src="10.8.0.9", dst="10.7.0.5") / UDP(sport=3, dport=4) / b"two"),
            "fd00:9::2": raw(IPv6(src="fd00:8::9", dst="fd00:9::2") / UDP(sport=3, dport=4) / b"six"),
            "big": raw(IP(src="10.8.0.9", dst="10.9.0.2") / UDP(sport=3, dport=4) / bytes(1600))}
    b.clear()
    b.extend(pkts.values())
    sel = bytearray(b.n)
    out["sent_first"] = port.write(kb, b.n, sel, 0)
    out["held_first"] = port.hold.n
    frames: dict = {}

    def note(fs: list[bytes]) -> None:
        for data in fs:
            e = Ether(data)
            if e.type in (0x0800, 0x86DD):
                dst = e.payload.dst
                frames[dst] = {"dst": e.dst, "src": e.src, "type": e.type, "same": raw(e.payload) == pkts.get(dst)}
            elif e.type == 0x0806 and e[ARP].op == 1:
                out["arp_who_has"] = e[ARP].pdst

    deadline = time.monotonic() + 3
    while port.hold.n and time.monotonic() < deadline:
        port.tick(time.monotonic())
        note(capture(0.05))

    # a destination nobody answers for yet: held while ARP asks, delivered once the answer comes
    b.clear()
    b.append(raw(IP(src="10.8.0.9", dst="10.9.0.7") / UDP(sport=3, dport=4) / b"late"))
    pkts["10.9.0.7"] = b.packet(0)
    port.write(kb, 1, bytearray(1), 0)
    note(capture(0.3))
    p1.send(raw(Ether(dst=me, src="02:00:00:00:00:07") /
                ARP(op=2, hwsrc="02:00:00:00:00:07", psrc="10.9.0.7", hwdst=me, pdst="10.9.0.1")))
    deadline = time.monotonic() + 3
    while port.hold.n and time.monotonic() < deadline:
        port.tick(time.monotonic())
        note(capture(0.05))
    note(capture(0.1))
    out["frames"] = frames

    # in-order TCP segments of one flow leave as one GSO frame (the receiver sees one super-segment)
    b.clear()
    seg = [bytes([65 + k]) * 1000 for k in range(4)]
    b.extend(raw(IP(src="10.8.0.9", dst="10.9.0.2", id=k) / TCP(sport=5, dport=6, seq=1000 + 1000 * k, flags="A") /
                 seg[k]) for k in range(4))
    frames_before = port.counters()["tx_frames"]
    out["tcp_sent"] = port.write(kb, 4, bytearray(4), 0)
    out["tcp_frames"] = port.counters()["tx_frames"] - frames_before
    got = [Ether(d) for d in capture(0.3)]
    tcp = [e for e in got if e.type == 0x0800 and e[IP].proto == 6]
    out["tcp_rx"] = [(len(e[IP]), bytes(e[TCP].payload) == b"".join(seg), e.dst) for e in tcp]
    out["counters"] = port.counters()
    port.close(remove=True)
    out["blackhole_after"] = "10.8.0.0/24" in subprocess.run(["ip", "route", "show", "type", "blackhole"],
                                                             capture_output=True, text=True).stdout
    print(json.dumps(out))


if __name__ == "__main__" and sys.argv[1:2] == ["port"]:
    _port_check(sys.argv[2] == "1")
