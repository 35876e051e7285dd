"""``ipsecgw run`` against strongSwan 5.9.8 (charon-systemd with kernel-libipsec) as the other gateway:
host A - our gw A === charon in gw B - host B.  kernel-libipsec forces ESP in UDP on 4500, so this is the
NAT-T path of our fastpath (ESP-in-UDP sockets, IKE steered to control on the shared port).

Shown: the first ping from host A raises the ACQUIRE and is answered; pings and a TCP stream with a
SHA-256 check in both directions; a CHILD SA rekey we start under a ping stream loses no ping; charon
lists the same SPIs as ours.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gateway_harness import GatewayProc, acquire_lines
from netns_tools import PSK, Topology, gateway_config
from strongswan import Charon, swanctl_conf, unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=f"strongSwan interop: {REASON}")]


def _tcp(t: Topology, port: int, nbytes: int) -> None:
    srv = subprocess.Popen(["ip", "netns", "exec", t.hB, sys.executable, str(Path(__file__).parent / "netns_tools.py"),
                            "tcp-server", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "listening"
        got = json.loads(t.run(t.hA, "tcp-client", "10.2.0.2", str(port), str(nbytes)))
        n, digest = got["reply"].split()
        assert int(n) == nbytes and digest == got["sha256"]
    finally:
        srv.wait(timeout=10)


def test_ipsecgw_run_with_strongswan(tmp_path: Path) -> None:
    with Topology(f"sw{id(tmp_path) % 10000}") as t:
        cfg, sock, _ = gateway_config(tmp_path, "A", encap=False)
        charon = Charon(t.gB, swanctl_conf(local="192.0.2.2", remote="192.0.2.1", local_id="gw-b.example",
                                           remote_id="gw-a.example", psk=PSK, ike="aes128gcm16-prfsha256-x25519",
                                           esp="aes128gcm16", local_ts="10.2.0.0/24", remote_ts="10.1.0.0/24"))
        gw = None
        try:
            charon.start()
            gw = GatewayProc(t.gA, cfg, sock, tmp_path / "gwA.log")
            first = t.ping(1, 0.1, size=56)
            if not first["got"]:                    # the held packet may time out while IKE moves to 4500
                first = t.ping(1, 0.1)
            assert first["got"], gw.text()[-3000:] + charon.log_text()[-3000:]
            assert acquire_lines(gw.text())
            c = gw.wait_child()
            assert c["encap"], "kernel-libipsec forces UDP encapsulation"
            listing = charon.list_sas()
            assert c["spi_in"] in listing and c["spi_out"] in listing, listing
            assert "INSTALLED, TUNNEL-in-UDP" in listing

            res = t.ping(50, 0.02, size=1000)
            assert len(res["got"]) == 50
            _tcp(t, 5401, 2 << 20)

            # our CHILD SA rekey (CREATE_CHILD_SA over IKE on 4500, shared with the fastpath) under pings
            out: dict = {}
            th = threading.Thread(target=lambda: out.update(t.ping(200, 0.02)))
            th.start()
            time.sleep(1.0)
            gw.cli("rekey", "net")
            new = gw.wait_child(other_than=c["spi_in"], timeout=15)
            th.join()
            assert len(out["got"]) == len(out["sent"]), \
                f"lost: {sorted(set(out['sent']) - set(out['got']))}"
            deadline = time.monotonic() + 10
            while new["spi_in"] not in charon.list_sas() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert new["spi_in"] in charon.list_sas()
            _tcp(t, 5402, 1 << 20)
            ctr = gw.child()["counters"]
            assert ctr["in"]["packets"] > 0 and ctr["out"]["packets"] > 0
            assert re.search(r"in\s+\d+ packets", gw.cli("list-sas"))
        finally:
            text = gw.text() if gw else ""
            if gw is not None:
                assert gw.stop() == 0, text[-3000:]
            charon.stop()
    assert "control stopped (exit code 0)" in gw.text()
    assert PSK not in gw.text()
