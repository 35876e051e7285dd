"""End to end in network namespaces: hostA - gwA === gwB - hostB, each gateway running our control daemon
(``ipsecgw run --control-only``) and our fastpath (``ipsecgw fastpath``), PSK and AES-GCM.

- traffic-triggered negotiation: start_action trap on both sides, the first ping from host A raises the
  ACQUIRE (nothing else initiates), and is held and delivered once the SA is up;
- ping and a TCP stream (SHA-256 checked) from host A to host B, in plain ESP and in ESP-in-UDP
  (which also shows the reuseport steering: IKE on 4500 still reaches control);
- kill -9 of gateway A's fastpath in the middle of a 20 ms ping stream, restarted at once: the longest
  outage is under 2 s, the SPIs are the same (no renegotiation), outbound sequence numbers keep rising.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemon_harness import SplitGateways, installed_child
from support.netns_tools import TOOLS, FastpathProc, Topology, gateway_config
from support.outage import longest_outage

from fastpath.shm import Region


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    try:
        import fastpath._kio  # noqa: F401
    except ImportError as exc:
        return f"fastpath._kio not built: {exc}"
    return None


REASON = _unavailable()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.slow]


def _outbound_seq(shm: Path, slot: int) -> int:
    time.sleep(0.3)                    # the fastpath publishes counters every 100 ms
    r = Region(Region._attach_handle(shm), str(shm))    # a plain reader: claims neither side
    try:
        c = r.counters(slot)
        return c.stats.seq if c else 0
    finally:
        r.close()


@pytest.mark.parametrize("encap", [False, True], ids=["esp", "esp-in-udp"])
def test_gateway_pair_end_to_end(tmp_path: Path, encap: bool) -> None:
    tag = f"{os.getpid() % 10000}{int(encap)}"
    with Topology(tag) as net:
        cfg_a, sock_a, shm_a = gateway_config(tmp_path, "A", encap=encap)
        cfg_b, sock_b, shm_b = gateway_config(tmp_path, "B", encap=encap)
        with SplitGateways(net, (cfg_a, sock_a, shm_a), (cfg_b, sock_b, shm_b), tmp_path) as gws:
            ctl_a, ctl_b, fp_a = gws.ctl_a, gws.ctl_b, gws.fp_a
            assert ctl_a.call("list-sas") == []          # trap only: nothing negotiated yet

            # 1. the first ping raises the ACQUIRE; held packets go out once the SA is up
            first = net.ping(5, 0.2)
            assert first["got"], f"no reply\n{ctl_a.log_text()}\n{fp_a.text()}"
            assert "ACQUIRE" in ctl_a.log_text()
            child = ctl_a.wait_for(installed_child)
            assert child["encap"] == encap
            assert installed_child(ctl_b.call("list-sas"))

            # 2. ping and TCP through the tunnel
            p = net.ping(50, 0.01, size=1000)
            assert len(p["got"]) == 50, p
            net.tcp(5001, 4 << 20)
            seq_before = _outbound_seq(shm_a, child["slot_out"])
            assert seq_before > 1000          # the TCP stream went through gateway A's outbound SA

            # 3. kill -9 of gateway A's fastpath mid-stream; restarted at once, it resumes the same SAs
            interval = 0.02
            pinger = gws.keep(subprocess.Popen(["ip", "netns", "exec", net.hA, sys.executable, TOOLS, "ping",
                                                "10.2.0.2", "250", str(interval)], stdout=subprocess.PIPE, text=True))
            time.sleep(1.5)
            fp_a.stop(signal.SIGKILL)
            fp_a = gws.keep(FastpathProc(net.gA, cfg_a, tmp_path / "fpA.log"))
            out, _ = pinger.communicate(timeout=30)
            ping = json.loads(out)
            gap = longest_outage(ping["sent"], ping["got"], interval)
            print(f"kill -9 of the fastpath: longest outage {gap:.2f} s")
            assert gap < 2.0, f"outage {gap:.2f} s"
            assert len(ping["got"]) > 150
            after = ctl_a.wait_for(installed_child)
            assert (after["spi_in"], after["spi_out"]) == (child["spi_in"], child["spi_out"])   # no renegotiation
            assert _outbound_seq(shm_a, child["slot_out"]) > seq_before
            if encap:
                # IKE on 4500 still reaches control through the steering: a rekey completes
                ctl_a.call("rekey", name="net")
                ctl_a.wait_for(lambda sas: (c := installed_child(sas)) and c["spi_out"] != child["spi_out"])
                assert len(net.ping(10, 0.02)["got"]) == 10
