"""iperf3 TCP through our gateway pair and through a strongSwan kernel-libipsec pair, same topology, same run.

hostA - gwA === gwB - hostB (tests/support/netns_tools.Topology).  Our pair: ``ipsecgw run --control-only`` and
``ipsecgw fastpath`` on each gateway, AES-128-GCM, traffic-triggered negotiation, plain ESP and ESP-in-UDP,
with the fastpath's offloads (the default) and without them (``offload: no``, for the before/after).
strongSwan's pair: charon-systemd with kernel-libipsec (userspace ESP over UDP 4500 through its TUN
``ipsec0``), AES-128-GCM as well.  Each figure is one 5 s iperf3 run (receiver's Gbit/s); extra_info has
both figures and ours / strongSwan's.  Needs root, iperf3 and (for the comparison) charon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, installed_child
from support.netns_tools import FastpathProc, Topology, gateway_config
from support.strongswan import Charon, swanctl_conf
from support.strongswan import unavailable_reason as swan_unavailable

SECONDS = 5
PSK = "bench-iperf-psk-0123456789"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("iperf3") is None:
        return "iperf3 not installed (apt install iperf3)"
    try:
        import fastpath._kio  # noqa: F401
    except ImportError as exc:
        return f"fastpath._kio not built: {exc}"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))


def _listening(ns: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return bool(out.strip())


def iperf(net: Topology, seconds: int = SECONDS, tries: int = 3) -> tuple[float, int]:
    """(Gbit/s received by hostB, TCP retransmissions) of one iperf3 TCP run from hostA."""
    why = ""
    for _ in range(tries):
        srv = subprocess.Popen(["ip", "netns", "exec", net.hB, "iperf3", "-s", "-1", "-p", "5201"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not _listening(net.hB, 5201) and time.monotonic() < deadline:
                time.sleep(0.05)
            r = subprocess.run(["ip", "netns", "exec", net.hA, "iperf3", "-c", "10.2.0.2", "-p", "5201", "-t",
                                str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30)
            try:
                res = json.loads(r.stdout)
            except ValueError:
                res = {}
            end = res.get("end", {})
            if "sum_received" in end:
                return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))
            why = res.get("error") or (r.stdout + r.stderr)[-1000:]
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()
    raise AssertionError(f"iperf3 failed {tries} times: {why}")


def ours(tmp: Path, encap: bool, offload: bool = True) -> tuple[float, int]:
    with Topology(f"ib{int(encap)}") as net:
        procs: list = []
        try:
            ctl = []
            for side, ns in (("A", net.gA), ("B", net.gB)):
                cfg, sock, shm = gateway_config(tmp, side, encap=encap, log_level="info",
                                                extra_fastpath=f", offload: {'yes' if offload else 'no'}")
                ctl.append(DaemonProc(cfg, sock, shm, netns=ns))
                procs.append(ctl[-1])
                procs.append(FastpathProc(ns, cfg, tmp / f"fp{side}.log"))
            assert net.ping(5, 0.2)["got"], "no reply through our pair"     # traffic-triggered negotiation
            ctl[0].wait_for(installed_child)
            return iperf(net)
        finally:
            for p in reversed(procs):
                p.stop()


def strongswan(tmp: Path) -> tuple[float, int]:
    with Topology("is") as net:
        sides = ((net.gA, "192.0.2.1", "192.0.2.2", "gw-a.example", "gw-b.example", "10.1.0.0/24", "10.2.0.0/24"),
                 (net.gB, "192.0.2.2", "192.0.2.1", "gw-b.example", "gw-a.example", "10.2.0.0/24", "10.1.0.0/24"))
        charons = []
        try:
            for ns, local, remote, lid, rid, lts, rts in sides:
                c = Charon(ns, swanctl_conf(local=local, remote=remote, local_id=lid, remote_id=rid, psk=PSK,
                                            ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16",
                                            local_ts=lts, remote_ts=rts))
                charons.append(c)
                c.start()
            charons[0].swanctl("--initiate", "--child", "net", "--timeout", "20")
            deadline = time.monotonic() + 10
            while not net.ping(3, 0.2)["got"]:
                assert time.monotonic() < deadline, f"no reply through strongSwan:\n{charons[0].log_text()}"
            return iperf(net)
        finally:
            for c in charons:
                c.stop()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
@pytest.mark.parametrize("encap", [False, True], ids=["esp", "esp-in-udp"])
def test_gateway_pair_iperf(benchmark, tmp_path: Path, encap: bool, offload: bool) -> None:
    """Our pair (offloads on: the default; off: one packet per syscall, the state before them) and, with
    offloads on, strongSwan's pair right after it."""
    why_no_swan = swan_unavailable() if offload else "measured with the offload runs"
    result: dict[str, tuple[float, int]] = {}

    def measure() -> None:
        result["ours"] = ours(tmp_path, encap, offload)
        if why_no_swan is None:
            result["strongswan"] = strongswan(tmp_path)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    info: dict[str, object] = {"kind": "gateway-iperf", "encap": encap, "offload": offload, "seconds": SECONDS,
                               "ours_gbps": round(result["ours"][0], 3), "ours_retransmits": result["ours"][1]}
    if "strongswan" in result:
        info["strongswan_gbps"] = round(result["strongswan"][0], 3)
        info["strongswan_retransmits"] = result["strongswan"][1]
        info["ratio"] = round(result["ours"][0] / result["strongswan"][0], 2)
    else:
        info["strongswan_skipped"] = why_no_swan
    benchmark.extra_info.update(info)
    print(f"\niperf3 TCP {SECONDS} s, {'ESP-in-UDP' if encap else 'ESP'}, offloads {'on' if offload else 'off'}: "
          f"{info}")
    assert result["ours"][0] > 0
