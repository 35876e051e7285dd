"""Gateway-wide counters in ``ipsecgw status`` move with real traffic, and inner fragmentation works end to end.

hostA - gwA === gwB - hostB in network namespaces (our control and fastpath on each gateway, plain ESP,
AES-GCM), with the TUN MTU forced to 4000 (``tun_mtu``) above the 1438 bytes an inner packet can have on the
1500-byte path, and 9000-byte links between each host and its gateway:

- a 3000-byte UDP datagram without DF from host A reaches host B intact (its kernel reassembles the inner
  fragments gateway A made, each sent as its own ESP packet), and so does a 3000-byte ping without DF and its
  reply (which host B's kernel fragments and gateway B cuts again);
- the same size with DF gets ICMP fragmentation-needed naming the inner MTU;
- ``status`` (JSON and text) shows it: fragmented packets and fragments, ICMP sent, protected packets and
  inbound ok/bytes rising with a ping burst; the totals survive a kill -9 of the fastpath.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, SplitGateways, installed_child
from support.netns_tools import ROOT, FastpathProc, Topology, gateway_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

INNER_MTU = 1446            # 1500 - (20 IP + 8 ESP + 8 IV + 16 ICV), rounded down to the 4-byte block, - 2

UDP_RECV = """
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7000))
s.settimeout(8)
print("ready", flush=True)
d = s.recv(65535)
print(len(d), hashlib.sha256(d).hexdigest(), flush=True)
"""

UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)        # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: no DF
s.sendto(bytes(range(256)) * 11 + bytes(2972 - 2816), ("10.2.0.2", 7000))
"""


def _sh(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30, check=check)


def _totals(ctl: DaemonProc, after: float = 0.7) -> dict:
    time.sleep(after)                        # the fastpath writes its totals twice a second
    t = ctl.call("status")["fastpath_totals"]
    assert t is not None
    return t


def _send_ah(ns: str, src: str, dst: str, count: int) -> int:
    """``count`` IPv4 AH packets with SPIs no SA has (HMAC-SHA2-256 sized ICV, an inner IPv4 packet)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import AH
    from support.strongswan import in_netns

    pkts = [bytes(IP(src=src, dst=dst) / AH(spi=0x0BAD0000 + i, seq=1, nh=4, icv=os.urandom(16))
                  / IP(src="10.2.0.2", dst="10.1.0.2") / UDP(sport=9, dport=9) / b"not ours") for i in range(count)]

    def send() -> int:
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for pkt in pkts:
            s.sendto(pkt, (dst, 0))
        s.close()
        return len(pkts)
    return in_netns(ns, send)


def test_fragmentation_and_gateway_counters(tmp_path: Path) -> None:
    tag = f"gc{os.getpid() % 10000}"
    with Topology(tag) as net:
        for ns, dev in ((net.hA, "v0a"), (net.gA, "v0b"), (net.gB, "v2a"), (net.hB, "v2b")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", "9000"], check=True)
        cfg_a, sock_a, shm_a = gateway_config(tmp_path, "A", encap=False, extra_fastpath=", tun_mtu: 4000",
                                              log_level="info")
        cfg_b, sock_b, shm_b = gateway_config(tmp_path, "B", encap=False, extra_fastpath=", tun_mtu: 4000",
                                              log_level="info")
        with SplitGateways(net, (cfg_a, sock_a, shm_a), (cfg_b, sock_b, shm_b), tmp_path) as gws:
            ctl_a, ctl_b, fp_a = gws.ctl_a, gws.ctl_b, gws.fp_a
            assert net.ping(5, 0.2)["got"], fp_a.text()          # trap: the first ping brings the SA up
            ctl_a.wait_for(installed_child)
            t0a, t0b = _totals(ctl_a), _totals(ctl_b)
            assert t0a["outbound"].get("acquire", 0) >= 1       # the first ping waited for the SA

            # 1. a 3000-byte UDP datagram without DF arrives whole (host B's kernel reassembles)
            recv = gws.keep(subprocess.Popen(["ip", "netns", "exec", net.hB, sys.executable, "-c", UDP_RECV],
                                             stdout=subprocess.PIPE, text=True))
            assert recv.stdout.readline().strip() == "ready"
            _sh(net.hA, sys.executable, "-c", UDP_SEND)
            got = recv.stdout.readline().split()
            want = bytes(range(256)) * 11 + bytes(2972 - 2816)
            assert got == [str(len(want)), hashlib.sha256(want).hexdigest()], fp_a.text()[-2000:]

            # 2. a 3000-byte ping without DF, both ways (the reply is fragmented by host B, cut again by gw B)
            r = _sh(net.hA, "ping", "-M", "dont", "-s", "2972", "-c", "2", "-i", "0.2", "-W", "2", "10.2.0.2")
            assert "2 received" in r.stdout, r.stdout

            ta, tb = _totals(ctl_a), _totals(ctl_b)
            assert ta["outbound"]["fragmented"] - t0a["outbound"].get("fragmented", 0) == 3   # UDP + 2 pings
            assert ta["fragments"] - t0a["fragments"] == 3 * 3       # 3000 bytes -> 3 pieces of <= 1438
            assert tb["outbound"].get("fragmented", 0) >= 2        # the replies' first fragments, cut again
            assert tb["inbound"]["ok"] - t0b["inbound"]["ok"] >= 9
            assert ta["outbound"].get("too-big", 0) == 0

            # 3. the same size with DF: ICMP fragmentation-needed with the inner MTU (after the non-DF tests:
            # host A caches the path MTU it learns here)
            r = _sh(net.hA, "ping", "-M", "do", "-s", "2972", "-c", "1", "-W", "1", "10.2.0.2", check=False)
            assert f"mtu = {INNER_MTU}" in r.stdout, r.stdout + r.stderr
            ta2 = _totals(ctl_a)
            assert ta2["outbound"]["icmp-too-big"] - ta["outbound"].get("icmp-too-big", 0) == 1

            # 4. a ping burst moves protected, inbound ok, bytes and sent; nothing fails
            p = net.ping(40, 0.01, size=500)
            assert len(p["got"]) == 40
            ta3 = _totals(ctl_a)
            assert ta3["outbound"]["protect"] - ta2["outbound"]["protect"] >= 40
            assert ta3["inbound"]["ok"] - ta2["inbound"]["ok"] >= 40
            assert ta3["tun_in_bytes"] - ta2["tun_in_bytes"] >= 40 * 528
            assert ta3["esp_out_bytes"] - ta2["esp_out_bytes"] >= 40 * (528 + 36)
            assert ta3["esp_in_bytes"] - ta2["esp_in_bytes"] >= 40 * (528 + 36)
            assert ta3["sent"] - ta2["sent"] >= 40 and ta3["send_failed"] == 0
            assert ta3["age"] < 2 and ta3["inbound"].get("auth-failed", 0) == 0

            # 4b. AH (protocol 51) reaches the fastpath on its raw socket and is counted by its verdict (no SA
            # has those SPIs), not dropped unseen by the kernel or fatal to the engine; traffic goes on
            ah = _send_ah(net.gB, "192.0.2.2", "192.0.2.1", 20)
            ta3b = _totals(ctl_a)
            assert ta3b["esp_in"] - ta3["esp_in"] >= ah, (ta3, ta3b)
            bad = {k: v - ta3["inbound"].get(k, 0) for k, v in ta3b["inbound"].items() if k != "ok"}
            assert {k: v for k, v in bad.items() if v} == {"no-sa": ah}, (ta3["inbound"], ta3b["inbound"])
            assert len(net.ping(5, 0.05)["got"]) >= 4 and fp_a.proc.poll() is None

            # 5. the text output, as an operator reads it
            out = subprocess.run([sys.executable, "-m", "control.cli", "status", "--socket", str(sock_a)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=20)
            assert out.returncode == 0, out.stderr
            text = out.stdout
            print(text)
            assert re.search(r"protected \d+", text) and re.search(r"fragmented [1-9]\d*", text), text
            assert re.search(r"too big \(ICMP sent\) [1-9]", text) and re.search(r"\bok [1-9]\d*", text), text

            # 6. kill -9 of the fastpath: the restarted one carries the totals on
            fp_a.stop(signal.SIGKILL)
            fp_a = gws.keep(FastpathProc(net.gA, cfg_a, tmp_path / "fpA2.log"))
            assert len(net.ping(5, 0.05)["got"]) >= 4
            ta4 = _totals(ctl_a)
            assert ta4["pid"] != ta3["pid"]
            assert ta4["outbound"]["protect"] >= ta3["outbound"]["protect"] + 4
            assert ta4["outbound"]["fragmented"] == ta3["outbound"]["fragmented"]
