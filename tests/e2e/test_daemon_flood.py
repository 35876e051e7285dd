"""Issue 15: a bounded spoofed-source IKE_SA_INIT flood at one ``ipsecgw run --control-only`` daemon (A,
responder for ``%any``) while its legitimate peer, our second daemon (B), connects: the peer is up within
3 s, A's half-open IKE SAs stay under the cookie threshold's bound, COOKIEs are counted, and after the
flood the half-open SAs drain (half_open_timeout)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, gateway_yaml, installed_child
from support.ike_flood import Flood, init_template, spoofed_ipv4
from support.strongswan import NetnsPair

RATE, SECONDS, THRESHOLD, TIMEOUT = 2000, 2.0, 30, 3


def _config(tmp: Path, tag: str, *, local: str, remote: str, lid: str, rid: str, lts: str, rts: str,
            start: str, extra: str = "") -> tuple[Path, Path, Path]:
    cfg, sock, shm = tmp / f"{tag}.yaml", tmp / f"{tag}.sock", tmp / f"{tag}.shm"
    text = gateway_yaml(shm=shm, sock=sock, ike_port=500, natt_port=4500, local=local, remote=remote,
                        remote_port=500, remote_natt_port=4500, local_id=lid, remote_id=rid, local_ts=lts,
                        remote_ts=rts, start_action=start, export_keys=False)
    cfg.write_text(text.replace("  log_level: debug\n", "  log_level: info\n" + extra, 1))
    return cfg, sock, shm


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and raw sockets")
def test_spoofed_init_flood_while_the_peer_connects(tmp_path: Path) -> None:
    tag = f"fl{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        # replies to the spoofed sources leave A (and die at B)
        subprocess.run(["ip", "-n", net.a, "route", "add", "default", "via", net.b_ip], check=True)
        a = _config(tmp_path, "a", local=net.a_ip, remote="'%any'", lid="gw-a.example", rid="gw-b.example",
                    lts="10.1.0.0/16", rts="10.2.0.0/16", start="none",
                    extra=f"  cookie_threshold: {THRESHOLD}\n  half_open_timeout: {TIMEOUT}s\n")
        b = _config(tmp_path, "b", local=net.b_ip, remote=net.a_ip, lid="gw-b.example", rid="gw-a.example",
                    lts="10.2.0.0/16", rts="10.1.0.0/16", start="none")
        da = DaemonProc(*a, netns=net.a)
        try:
            db = DaemonProc(*b, netns=net.b)
            try:
                template = init_template(net.a_ip)
                flood = Flood(net.b, net.a_ip, [("init", lambda: os.urandom(8) + template[8:])], spoofed_ipv4,
                              rate=RATE, seconds=SECONDS).start()
                time.sleep(0.5)                         # the flood is under way: A is past its threshold
                peak = da.call("status")["admission"]["half_open"]
                t0 = time.monotonic()
                db.call("initiate", name="peer")
                db.wait_for(installed_child, timeout=3.0)
                up = time.monotonic() - t0
                while flood.is_alive():
                    peak = max(peak, da.call("status")["admission"]["half_open"])
                    time.sleep(0.05)
                flood.join()
                st = da.call("status")["admission"]
                assert up < 3.0
                assert flood.total >= RATE * SECONDS * 0.9, flood.sent
                # spoofed sources never return their cookie: only the first THRESHOLD took state
                assert peak <= THRESHOLD + 1, (peak, st)
                assert st["counters"].get("cookie_sent", 0) > flood.total // 2, st
                assert st["counters"].get("cookie_accepted", 0) >= 1, st        # B's retry with its cookie
                deadline = time.monotonic() + TIMEOUT + 3
                while da.call("status")["admission"]["half_open"] and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert da.call("status")["admission"]["half_open"] == 0
                assert installed_child(da.call("list-sas")) is not None          # the peer's SA is unharmed
            finally:
                db.stop()
        finally:
            da.stop()
