"""Issue 15: a bounded spoofed-source IKE_SA_INIT flood at one ``ipsecgw run --control-only`` daemon (A,
responder for ``%any``) while its legitimate peer, our second daemon (B), connects: the peer is up within
3 s, A's half-open IKE SAs stay under the cookie threshold's bound, COOKIEs are counted, and after the
flood the half-open SAs drain (half_open_timeout)."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, gateway_yaml, installed_child
from support.ike_pair import cfgs
from support.strongswan import NetnsPair, in_netns

from control.ike.sa import IkeSA

RATE, SECONDS, THRESHOLD, TIMEOUT = 2000, 2.0, 30, 3


def _template(dst: str) -> bytes:
    ca, _ = cfgs()
    i = IkeSA(ca, initiator=True, local=("198.18.0.1", 500), remote=(dst, 500))
    i.initiate(0.0)
    return i.datagrams_to_send()[0].data


def _udp_ip(src: str, dst: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 500, 500, 8 + len(payload), 0) + payload      # UDP checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.getrandbits(16), 0, 64, socket.IPPROTO_UDP,
                     0, socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp                     # the kernel fills in the IP checksum with IP_HDRINCL


def _flood(dst: str, template: bytes, sent: list[int]) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    start = time.monotonic()
    n = 0
    while (el := time.monotonic() - start) < SECONDS:
        while n < el * RATE:
            src = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
            s.sendto(_udp_ip(src, dst, os.urandom(8) + template[8:]), (dst, 0))
            n += 1
        time.sleep(0.005)
    s.close()
    sent.append(n)


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
                template, sent = _template(net.a_ip), []
                flood = threading.Thread(target=in_netns, args=(net.b, lambda: _flood(net.a_ip, template, sent)))
                flood.start()
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
                assert sent and sent[0] >= RATE * SECONDS * 0.9, sent
                # spoofed sources never return their cookie: only the first THRESHOLD took state
                assert peak <= THRESHOLD + 1, (peak, st)
                assert st["counters"].get("cookie_sent", 0) > sent[0] // 2, st
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
