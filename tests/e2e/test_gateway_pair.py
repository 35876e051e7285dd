"""``ipsecgw run`` on both ends: host A - gw A === gw B - host B in network namespaces, each gateway a
supervisor with its control and fastpath processes.

One topology serves the whole module (in order): traffic-triggered negotiation, ping and TCP, the operator
CLI; a CHILD SA rekey under iperf3 load with every datagram counted; kill -9 of control (traffic keeps
flowing, the SAs are adopted and renegotiated); kill -9 of the fastpath (back within 2 s, same SPIs);
reload; and a clean stop (Deletes, TUN gone).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.gateway_harness import GatewayProc, Iperf3Server, acquire_lines, iperf3
from support.netns_tools import Topology, gateway_config, with_other_connection
from support.outage import longest_outage

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

TAG = f"gw{os.getpid() % 10000}"


class Pair:
    def __init__(self, topo: Topology, tmp: Path):
        self.t, self.tmp = topo, tmp
        self.cfg_a, self.sock_a, self.shm_a = gateway_config(tmp, "A", encap=False)
        self.cfg_b, self.sock_b, self.shm_b = gateway_config(tmp, "B", encap=False)
        self.A = GatewayProc(topo.gA, self.cfg_a, self.sock_a, tmp / "gwA.log")
        self.B = GatewayProc(topo.gB, self.cfg_b, self.sock_b, tmp / "gwB.log")

    def stop(self) -> None:
        for g in (self.A, self.B):
            g.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("gwpair")
    with Topology(TAG) as topo:
        p = Pair(topo, tmp)
        try:
            yield p
        finally:
            p.stop()


def _up(pair: Pair) -> dict:
    """The CHILD SA on A, brought up by a ping if needed (each test also runs alone)."""
    if pair.A.child() is None:
        pair.t.ping(2, 0.2)
    return pair.A.wait_child()


def _ping_stream(t: Topology, count: int, interval: float) -> tuple[threading.Thread, dict]:
    res: dict = {}
    th = threading.Thread(target=lambda: res.update(t.ping(count, interval)))
    th.start()
    return th, res


def test_acquire_ping_tcp_and_cli(pair: Pair) -> None:
    t, A = pair.t, pair.A
    first = t.ping(1, 0.1)
    assert first["got"] == [0], pair.A.text()[-3000:]
    assert acquire_lines(A.text()), "the first ping must raise an ACQUIRE"
    res = t.ping(20, 0.02, size=1000)
    assert len(res["got"]) == 20
    t.tcp(5301, 2 << 20)

    st = A.json("status")
    procs = st["processes"]
    assert {"supervisor", "control", "fastpath"} <= set(procs)
    assert all(procs[n]["pid"] and procs[n]["running"] for n in ("supervisor", "control", "fastpath"))
    assert st["io"]["mode"] == "kernel" and st["engines"]["used"] in st["engines"]["present"]
    assert st["totals"]["out"]["packets"] >= 21 and st["totals"]["in"]["packets"] >= 21
    c = A.child()
    assert c is not None and c["placement"].startswith("software:")
    assert c["counters"]["out"]["packets"] > 0 and c["counters"]["out"]["bytes"] > 2 << 20
    text = A.cli("list-sas")
    assert re.search(r"out\s+\d+ packets", text) and "placement software:" in text
    pols = A.json("list-policies")
    assert len(pols) == 1 and pols[0]["action"] == "protect" and pols[0]["sa_slots"] == [c["slot_out"]]
    assert "PROTECT" in A.cli("list-policies") and "ipsecgw gateway" in A.cli("status")


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_child_rekey_under_iperf3_load_loses_nothing(pair: Pair) -> None:
    t, A = pair.t, pair.A
    before = _up(pair)
    srv = Iperf3Server(t.hB, "10.2.0.2", 5202)
    try:
        result: dict = {}
        th = threading.Thread(target=lambda: result.update(iperf3(t.hA, "-c", "10.2.0.2", "-p", "5202", "-u", "-b",
                                                                   "40M", "-l", "1200", "-t", "5")))
        th.start()
        pings, pres = _ping_stream(t, 250, 0.02)
        time.sleep(2.0)
        A.cli("rekey", "net")
        after = A.wait_child(other_than=before["spi_in"], timeout=10)
        th.join()
        pings.join()
    finally:
        srv.stop()
    assert after["spi_in"] != before["spi_in"] and after["spi_out"] != before["spi_out"]
    summary = result["end"]["sum"]
    assert summary["packets"] > 10000
    # Counted at the gateways, which is what a rekey can lose: every packet A read was protected and sent,
    # B decrypted every ESP packet it got (none met a missing or deleted SA) and wrote them all out.  iperf3's
    # own loss figure also counts what a CPU-starved receiving host drops after gateway B, so it is reported,
    # not asserted (on a loaded 2-core machine host B's socket overflowed while both gateways lost nothing).
    time.sleep(1.2)                     # totals are published twice a second
    tA, tB = (g.json("status")["fastpath_totals"] for g in (A, pair.B))
    totals = f"gateway totals A {tA}, B {tB}; iperf3 {summary}"
    assert tA["send_failed"] == tA["held_dropped"] == tB["send_failed"] == 0, totals
    assert tA["outbound"].get("protect", 0) >= summary["packets"], totals
    assert tB["esp_in"] >= tA["outbound"]["protect"] and tB["inbound"] == {"ok": tB["esp_in"]}, totals
    assert tB["tun_out"] >= tB["inbound"]["ok"], totals
    if summary["lost_packets"]:
        print(f"iperf3 lost {summary['lost_packets']} datagrams after the gateways ({totals})")
    assert len(pres["got"]) == len(pres["sent"]), f"lost pings: {sorted(set(pres['sent']) - set(pres['got']))}"
    assert "rekeyed" in A.text()


def test_kill_control_keeps_traffic_flowing(pair: Pair) -> None:
    t, A = pair.t, pair.A
    _up(pair)
    pids = A.pids()
    pings, res = _ping_stream(t, 200, 0.02)
    time.sleep(1.0)
    os.kill(pids["control"], signal.SIGKILL)
    pings.join()
    if len(res["got"]) != len(res["sent"]):
        time.sleep(1.2)             # totals are published twice a second; they say where a ping went
        totals = {n: g.json("status").get("fastpath_totals") for n, g in (("A", A), ("B", pair.B))}
        raise AssertionError(f"lost: {sorted(set(res['sent']) - set(res['got']))}; gateway totals {totals}")
    # the supervisor restarted control, which adopted the SAs and renegotiated the child
    deadline = time.monotonic() + 20
    while True:
        try:
            st = A.json("status")
            if st["processes"]["control"]["pid"] != pids["control"] and st["child_sas"] == 1 \
                    and st["adopted_sas"] == 0:
                break
        except RuntimeError:
            pass
        assert time.monotonic() < deadline, A.text()[-4000:]
        time.sleep(0.2)
    assert st["processes"]["control"]["restarts"] == 1
    assert st["processes"]["fastpath"]["pid"] == pids["fastpath"]
    assert "adopted 2 SA(s)" in A.text()
    assert len(t.ping(10, 0.02)["got"]) == 10


def test_kill_fastpath_recovers_within_2s_without_renegotiation(pair: Pair) -> None:
    t, A = pair.t, pair.A
    before = _up(pair)
    ike_before = [i["spi_i"] for i in A.json("list-sas") if i.get("state") == "ESTABLISHED"]
    pids = A.pids()
    pings, res = _ping_stream(t, 200, 0.02)
    time.sleep(1.0)
    os.kill(pids["fastpath"], signal.SIGKILL)
    pings.join()
    gap = longest_outage(res["sent"], res["got"], 0.02)
    assert gap < 2.0, f"outage {gap:.2f} s"
    assert len(res["got"]) > 100
    after = A.wait_child()
    assert (after["spi_in"], after["spi_out"]) == (before["spi_in"], before["spi_out"])
    assert [i["spi_i"] for i in A.json("list-sas") if i.get("state") == "ESTABLISHED"] == ike_before
    st = A.json("status")
    assert st["processes"]["fastpath"]["restarts"] == 1 and st["processes"]["fastpath"]["pid"] != pids["fastpath"]


def test_reload_adds_and_removes_without_touching_unchanged(pair: Pair) -> None:
    t, A = pair.t, pair.A
    before = _up(pair)
    original = pair.cfg_a.read_text()
    extra = with_other_connection(original)
    try:
        pair.cfg_a.write_text(extra)
        res = A.json("reload")
        assert res["added"] == ["other"] and res["unchanged"] == ["peer"] and not res["removed"]
        assert "10.9.0.0/24" in res["routes"]["added"]
        routes = subprocess.run(["ip", "-n", t.gA, "route"], capture_output=True, text=True).stdout
        assert "10.9.0.0/24 dev ipsgA" in routes
        pols = A.json("list-policies")
        assert {(p["connection"], p["state"].split(" ")[0]) for p in pols} == {("peer", "SPI"), ("other", "trap")}
        assert (A.child()["spi_in"], A.child()["spi_out"]) == (before["spi_in"], before["spi_out"])
        assert len(t.ping(10, 0.02)["got"]) == 10

        pair.cfg_a.write_text(original)
        res = A.json("reload")
        assert res["removed"] == ["other"] and res["unchanged"] == ["peer"]
        assert "10.9.0.0/24 dev" not in subprocess.run(["ip", "-n", t.gA, "route"], capture_output=True,
                                                         text=True).stdout
        assert (A.child()["spi_in"], A.child()["spi_out"]) == (before["spi_in"], before["spi_out"])

        # a changed connection is renegotiated from the new settings
        pair.cfg_a.write_text(original.replace("start_action: trap", "start_action: trap\n        rekey_time: 30m"))
        res = A.json("reload")
        assert res["changed"] == ["peer"]
        assert len(t.ping(3, 0.2)["got"]) >= 2        # the trap brings it up again
        assert A.wait_child()["spi_in"] != before["spi_in"]
    finally:
        pair.cfg_a.write_text(original)
    bad = pair.cfg_a.read_text().replace("esp_proposals: [aes128gcm16]", "esp_proposals: [aes999gcm16]")
    pair.cfg_a.write_text(bad)
    try:
        with pytest.raises(RuntimeError, match="aes999gcm16"):
            A.cli("reload")
    finally:
        pair.cfg_a.write_text(original)


def test_clean_stop_deletes_and_removes_tun(pair: Pair) -> None:
    t, A, B = pair.t, pair.A, pair.B
    _up(pair)
    assert A.stop() == 0
    text = A.text()
    assert "control stopped (exit code 0)" in text and "fastpath stopped (exit code 0)" in text
    assert text.index("control stopped") < text.index("fastpath stopped")
    assert "ipsgA" not in subprocess.run(["ip", "-n", t.gA, "link"], capture_output=True, text=True).stdout
    assert not pair.shm_a.exists() and not pair.sock_a.exists()
    # B heard the Delete: its IKE SA is gone
    deadline = time.monotonic() + 10
    while [i for i in B.json("list-sas") if i.get("state") == "ESTABLISHED"]:
        assert time.monotonic() < deadline, B.text()[-3000:]
        time.sleep(0.1)
    assert "fastpath-e2e-psk" not in text
