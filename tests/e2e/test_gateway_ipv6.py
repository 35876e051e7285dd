"""Outer IPv6 in the kernel-I/O gateway: ESP and ESP-in-UDP between the gateways over an IPv6 transit,
carrying inner IPv4 and inner IPv6.

- our gateway pair (``ipsecgw run`` on both ends) over IPv6 only, plain ESP (raw protocol 50 over IPv6,
  headers rebuilt from IPV6_PKTINFO/IPV6_TCLASS) and ESP-in-UDP (``encap: yes``, the NAT-T reuseport
  group over IPv6): the first ping raises the ACQUIRE, pings of both inner families, TCP streams with a
  SHA-256 check, and tcpdump on the transit shows only outer IPv6 of the expected kind;
- dual stack: one gateway with an IPv4 connection (inner IPv4) and an IPv6 one (inner IPv6) to the same
  peer, both up at once;
- our gateway to strongSwan 5.9.8 (kernel-libipsec, so ESP-in-UDP) over IPv6;
- the MTU accounting with a 40-byte outer header: the automatic TUN MTU, and the classifier's ICMP
  "fragmentation needed" for an SA with IPv6 outer addresses (checked with scapy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.gateway_harness import GatewayProc, acquire_lines, charon_gateway_b, first_ping, gateway_a_with_charon
from support.netns_tools import PSK, V6, Tcpdump, Topology, gateway_config
from support.sa import make_sa
from support.strongswan import unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
TAG = f"i6{os.getpid() % 10000}"
NETNS_REASON = None if os.geteuid() == 0 and os.path.exists("/dev/net/tun") else "needs root and /dev/net/tun"
netns = pytest.mark.skipif(NETNS_REASON is not None, reason=NETNS_REASON or "")


def _captured(cap: Tcpdump) -> list:
    import scapy.layers.inet6  # noqa: F401 - registers Ethernet -> IPv6 before dissecting
    import scapy.layers.l2  # noqa: F401 - registers Ethernet for rdpcap
    from scapy.utils import rdpcap

    cap.stop()
    return list(rdpcap(str(cap.path)))


def _ike(gw: GatewayProc) -> dict:
    return next(i for i in gw.json("list-sas") if i.get("state") == "ESTABLISHED")


def _outer_kinds(pkts: list) -> dict[str, int]:
    """Bytes the capture saw per kind: esp4, esp6, udp-esp4, udp-esp6, ike4, ike6 (IKE on 4500).  Bytes, not
    packets: a UDP_SEGMENT run crosses the veth as one GSO packet."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    kinds: dict[str, int] = {}
    for p in pkts:
        fam = "6" if IPv6 in p else "4" if IP in p else "?"
        ip = p[IPv6] if fam == "6" else p[IP] if fam == "4" else None
        if ip is None:
            continue
        proto = ip.nh if fam == "6" else ip.proto
        if proto == 50:
            k = "esp"
        elif UDP in p:
            k = "ike" if bytes(p[UDP].payload)[:4] == bytes(4) else "udp-esp"
        else:
            k = "other"
        kinds[k + fam] = kinds.get(k + fam, 0) + len(p)
    return kinds


@netns
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
@pytest.mark.parametrize("encap", [False, True], ids=["esp", "esp-in-udp"])
def test_pair_over_ipv6_outer(tmp_path: Path, encap: bool) -> None:
    with Topology(f"{TAG}{int(encap)}", ipv6=True) as t:
        cfg_a, sock_a, _ = gateway_config(tmp_path, "A", encap=encap, outer="ipv6")
        cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=encap, outer="ipv6")
        A = GatewayProc(t.gA, cfg_a, sock_a, tmp_path / "gwA.log")
        B = cap = None
        try:
            B = GatewayProc(t.gB, cfg_b, sock_b, tmp_path / "gwB.log")
            # ESP and UDP 4500 on gw A's transit interface
            cap = Tcpdump(t.gA, "v1a", tmp_path / "transit.pcap", "esp or ip6 proto 50 or udp port 4500")
            first = t.ping(1, 0.1)
            assert first["got"] == [0], A.text()[-3000:]
            assert acquire_lines(A.text()), "the first ping must raise an ACQUIRE"
            c = A.wait_child()
            assert c["encap"] == encap
            assert _ike(A)["remote"]["addr"] == V6["gB"] and _ike(B)["remote"]["addr"] == V6["gA"]

            v4 = t.ping(30, 0.02, size=1000)
            assert len(v4["got"]) == 30
            v6 = t.ping(30, 0.02, dst=V6["hB"], size=1000)
            assert len(v6["got"]) == 30, A.text()[-3000:]
            t.tcp(5501, 1 << 20, dst="10.2.0.2")
            t.tcp(5502, 1 << 20, dst=V6["hB"])

            kinds = _outer_kinds(_captured(cap))
            want = "udp-esp6" if encap else "esp6"
            assert kinds.get(want, 0) > 2 << 20, kinds       # 1 MiB + 1 MiB of TCP, and the pings
            assert not {k for k in kinds if k.endswith("4")}, kinds      # nothing over outer IPv4
            assert not {k for k in kinds if k.startswith("esp" if encap else "udp-esp")}, kinds

            # TUN MTU from the 40-byte outer header: 1500 - (40 + 8 UDP + 8 ESP + 8 IV + 16 ICV), 4-aligned, - 2
            link = subprocess.run(["ip", "-n", t.gA, "link", "show", "ipsgA"], capture_output=True, text=True)
            assert "mtu 1418 " in link.stdout
            ctr = A.child()["counters"]
            assert ctr["out"]["bytes"] > 2 << 20 and ctr["in"]["packets"] > 0
            st = A.json("status")
            assert st["totals"]["out"]["packets"] >= 60 and st["totals"]["in"]["packets"] >= 60
        finally:
            if cap is not None:
                cap.stop()
            for g in (B, A):
                if g is not None:
                    assert g.stop() == 0, g.text()[-3000:]
    text = A.text()
    assert "fastpath stopped (exit code 0)" in text and PSK not in text
    assert f"NAT-T {V6['gA']}:4500" in text


@netns
@pytest.mark.slow
def test_dual_stack_ipv4_and_ipv6_connections(tmp_path: Path) -> None:
    """One fastpath serving an IPv4-outer connection and an IPv6-outer one at the same time, with
    ESP-in-UDP so that both families' NAT-T sockets (and their IKE steering) are in use."""
    with Topology(f"{TAG}d", ipv6=True) as t:
        cfg_a, sock_a, _ = gateway_config(tmp_path, "A", encap=True, outer="dual")
        cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=True, outer="dual")
        A = GatewayProc(t.gA, cfg_a, sock_a, tmp_path / "gwA.log")
        B = None
        try:
            B = GatewayProc(t.gB, cfg_b, sock_b, tmp_path / "gwB.log")
            assert t.ping(2, 0.2)["got"], A.text()[-3000:]
            assert t.ping(2, 0.2, dst=V6["hB"])["got"], A.text()[-3000:]
            c4, c6 = A.wait_child("net"), A.wait_child("net6")
            assert c4["encap"] and c6["encap"]
            ikes = {i["remote"]["addr"] for i in A.json("list-sas") if i.get("state") == "ESTABLISHED"}
            assert ikes == {"192.0.2.2", V6["gB"]}
            assert len(t.ping(20, 0.02, size=1200)["got"]) == 20
            assert len(t.ping(20, 0.02, dst=V6["hB"], size=1200)["got"]) == 20
            t.tcp(5511, 1 << 20, dst="10.2.0.2")
            t.tcp(5512, 1 << 20, dst=V6["hB"])
            for name in ("net", "net6"):
                ctr = A.child(name)["counters"]
                assert ctr["out"]["bytes"] > 1 << 20 and ctr["in"]["packets"] > 20
            # both families' IKE reached control through the shared NAT-T ports (a rekey of each)
            A.cli("rekey", "net6")
            assert A.wait_child("net6", other_than=c6["spi_in"], timeout=15)["spi_in"] != c6["spi_in"]
            assert len(t.ping(10, 0.02, dst=V6["hB"])["got"]) == 10
        finally:
            for g in (B, A):
                if g is not None:
                    assert g.stop() == 0, g.text()[-3000:]


@netns
def test_natt_steering_over_ipv6() -> None:
    """The reuseport group on an IPv6 address: IKE (non-ESP marker) reaches the control member, ESP-in-UDP
    the fastpath's, which finds its index by probe, also after control's socket leaves and rejoins."""
    import socket
    import struct

    from support.reuseport import control_socket, drain_control
    from support.strongswan import in_netns

    kio = pytest.importorskip("fastpath.io.kio")
    if kio.lib is None:
        pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}")

    from fastpath.batch import Batch
    from fastpath.io.sockets import NattSocket

    ns, host, port = f"{TAG}st", "2001:db8:7::1", 4500
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{host}/128", "dev", "lo", "nodad"], check=True)

        def body() -> None:
            ctl = control_socket(port, host)
            fp = NattSocket(host, port)
            kb = kio.KBatch(Batch(64, mtu=1500))
            for _ in range(2):                   # as started, then after control's socket rejoined
                fp.probe()
                deadline = time.monotonic() + 2
                while fp.probing and time.monotonic() < deadline:
                    _, _, probe = kb.recv_udp(fp.fileno(), fp.local_packed, port)
                    fp.tick(probe, time.monotonic())
                    time.sleep(0.01)
                assert not fp.probing
                ike, esp = [], []
                for i in range(16):              # many source ports: the kernel's hash alone would spread them
                    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                    tx.bind((host, 0))
                    ike.append(bytes(4) + os.urandom(8) + bytes([i]))
                    esp.append(struct.pack("!II", 0x3000 + i, i + 1) + os.urandom(24))
                    tx.sendto(ike[-1], (host, port))
                    tx.sendto(esp[-1], (host, port))
                    tx.close()
                time.sleep(0.05)
                n, misdirected, _ = kb.recv_udp(fp.fileno(), fp.local_packed, port)
                assert misdirected == 0
                assert [kb.batch.packet(i)[48:] for i in range(n)] == esp
                assert all(kb.batch.packet(i)[0] >> 4 == 6 for i in range(n))
                assert drain_control(ctl) == ike
                ctl.close()                      # control restarts: the group is renumbered
                ctl = control_socket(port, host)
            fp.close()
            ctl.close()

        in_netns(ns, body)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


SW_REASON = unavailable_reason()


@pytest.mark.slow
@pytest.mark.skipif(SW_REASON is not None, reason=f"strongSwan interop: {SW_REASON}")
def test_ipsecgw_to_strongswan_over_ipv6(tmp_path: Path) -> None:
    with Topology(f"{TAG}s", ipv6=True) as t:
        cfg, sock, _ = gateway_config(tmp_path, "A", encap=False, outer="ipv6")
        charon = charon_gateway_b(t, ipv6=True)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            first_ping(t, gw, charon)
            c = gw.wait_child()
            assert c["encap"], "kernel-libipsec forces UDP encapsulation"
            listing = charon.list_sas()
            assert c["spi_in"] in listing and c["spi_out"] in listing, listing
            assert V6["gA"] in listing and "INSTALLED, TUNNEL-in-UDP" in listing, listing
            assert len(t.ping(30, 0.02, size=1000)["got"]) == 30
            res6 = t.ping(30, 0.02, dst=V6["hB"], size=1000)
            assert len(res6["got"]) == 30, gw.text()[-3000:] + charon.log_text()[-3000:]
            t.tcp(5521, 1 << 20, dst="10.2.0.2")
            t.tcp(5522, 1 << 20, dst=V6["hB"])
            ctr = gw.child()["counters"]
            assert ctr["in"]["packets"] > 0 and ctr["out"]["bytes"] > 2 << 20


# -- MTU accounting with the 40-byte outer header (no namespaces) -------------------------------------

def test_auto_tun_mtu_counts_the_ipv6_outer_header(tmp_path: Path) -> None:
    from control.config import load_config
    from control.fastpath_plan import auto_tun_mtu

    got = {}
    for outer in ("ipv4", "ipv6", "dual"):
        cfg, _, _ = gateway_config(tmp_path, "A", encap=False, outer=outer)
        got[outer] = auto_tun_mtu(load_config(cfg))
    # AES-GCM-128: ESP 8 + IV 8 + ICV 16, UDP 8 always counted, 4-byte padding block and 2 trailer bytes
    assert got == {"ipv4": 1438, "ipv6": 1418, "dual": 1418}


def test_too_big_for_an_ipv6_outer_sa_gets_icmp_with_its_inner_mtu(tmp_path: Path) -> None:
    kio = pytest.importorskip("fastpath.io.kio")
    if kio.lib is None:
        pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}")
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

    from cdefs.sa import Direction
    from control.shm import PROTECT, ControlRegion, Policy
    from fastpath import engines
    from fastpath.batch import Batch
    from fastpath.classify import Classifier
    from fastpath.shm import Capacities, FastpathRegion

    for encap, want in ((False, 1426), (True, 1418)):     # 1500 - 40 - (8 UDP) - 8 - 8 - 16, aligned, - 2
        path = tmp_path / f"r{int(encap)}.shm"
        ctl = ControlRegion.create(path, Capacities(n_sa=16, n_spd=16, cmd_ring=16, evt_ring=16))
        fp = FastpathRegion.attach(path)
        try:
            sa = make_sa("aes-gcm-128", family=6, udp_encap=encap)
            assert sa.src.version == 6
            slot = ctl.install_sa(sa, Direction.OUT).slot
            ctl.add_policy(Policy("10.1.0.0/16", "10.2.0.0/16", action=PROTECT, priority=10), (slot,), commit=False)
            ctl.add_policy(Policy("fd00:1::/64", "fd00:2::/64", action=PROTECT, priority=10), (slot,))
            fp.sync(engines.create("reference", capacity=16))
            cls = Classifier(fp, outer_mtu=1500, icmp_src4="10.1.0.1")
            cls.set_sa(slot, sa)
            b = Batch(2, mtu=1600)
            kb = kio.KBatch(b)
            verdict = np.zeros(2, dtype=np.uint8)

            def one(pkt: bytes, b=b, kb=kb, cls=cls, verdict=verdict) -> bytes:
                b.clear()
                b.append(pkt)
                cls.classify(kb, 1, verdict, True)
                return b.packet(0)

            def v4(total: int) -> bytes:
                return bytes(IP(src="10.1.0.5", dst="10.2.0.7", flags="DF") / UDP(sport=1, dport=2)
                             / bytes(total - 28))

            one(v4(want))
            assert verdict[0] == kio.V_PROTECT
            out = IP(one(v4(want + 1)))
            assert verdict[0] == kio.V_ICMP and out[ICMP].type == 3 and out[ICMP].nexthopmtu == want
            out6 = IPv6(one(bytes(IPv6(src="fd00:1::5", dst="fd00:2::7") / UDP(sport=1, dport=2)
                                  / bytes(want + 1 - 48))))
            assert verdict[0] == kio.V_ICMP and out6[ICMPv6PacketTooBig].mtu == want
        finally:
            fp.close()
            ctl.close()
