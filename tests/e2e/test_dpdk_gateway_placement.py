"""``ipsecgw run`` with ``io: dpdk`` and a cryptodev in ``dpdk.vdevs``: each SA lands on the rung placement picks.

host A - gw A (DPDK on net_af_packet, plus crypto_aesni_gcm0) === gw B (our gateway, kernel I/O) - host B.
With a working crypto_aesni_gcm0 both AES-GCM SAs run on a lookaside cryptodev session: pings and a TCP
stream with a SHA-256 check go through, list-sas names the device and the rung, and the worker's cryptodev
back end counts the operations.  With the same device offering no queue pairs (``max_nb_queue_pairs=0``),
both session rungs fail for real and the SAs fall back to the ESP core's ipsec-mb; list-sas gives DPDK's
reason for each rung given up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.dpdk_topology import dpdk_config, host_offloads_off
from support.gateway_harness import GatewayProc, acquire_lines
from support.netns_tools import Topology, gateway_config

from fastpath.dpdk import eal

_ok, _why = eal.availability()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not _ok, reason=f"DPDK binding unavailable: {_why}")]

TAG = f"dp{os.getpid() % 10000}"


def _config(tmp: Path, crypto_vdev: str) -> tuple[Path, Path, Path]:
    tmp.mkdir()
    cfg, sock, shm = dpdk_config(tmp, crypto_vdevs=(crypto_vdev,))
    cfg.write_text(cfg.read_text().replace("memory_mb: 128", "memory_mb: 256"))   # + the cryptodev's pools
    return cfg, sock, shm


def _up(t: Topology, gw: GatewayProc) -> dict:
    first = t.ping(1, 2.0)
    if not first["got"]:
        first = t.ping(1, 1.0)
    assert first["got"], gw.text()[-3000:]
    assert acquire_lines(gw.text())
    return gw.wait_child()


def test_cryptodev_rung_then_forced_fall_back(tmp_path: Path) -> None:
    with Topology(TAG) as t:
        host_offloads_off(t.hA, "v0a")
        cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=False)
        B = GatewayProc(t.gB, cfg_b, sock_b, tmp_path / "gwB.log")
        A = None
        try:
            cfg, sock, _ = _config(tmp_path / "a1", "crypto_aesni_gcm0")
            A = GatewayProc(t.gA, cfg, sock, tmp_path / "gwA1.log")
            _up(t, A)
            assert len(t.ping(20, 0.02, size=1000)["got"]) == 20
            t.tcp(5511, 1 << 20)
            c = A.child()
            assert c is not None
            assert c["engine"] == "crypto_aesni_gcm0", c
            assert c["placement"] == c["placement_out"] == "lookaside-crypto:crypto_aesni_gcm0", c
            assert c["counters"]["out"]["bytes"] > 1 << 20 and c["counters"]["in"]["packets"] > 20
            text = A.cli("list-sas")
            assert "engine crypto_aesni_gcm0 (placement lookaside-crypto:crypto_aesni_gcm0)" in text, text
            deadline = time.monotonic() + 3       # the status file is rewritten once a second
            while True:
                dp = A.json("status")["io"]["dpdk"]
                cs = dp.get("crypto_sessions") or {}
                if cs.get("dequeued", 0) > 700 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            # the traffic really went through the cryptodev: its queue pair saw the operations (1 MiB of TCP
            # alone is over 700 ESP packets)
            assert cs["sessions"] >= 2 and cs["dequeued"] > 700 and cs["errors"] == 0, cs
            assert A.json("status")["engines"]["used"] == "crypto_aesni_gcm0"
            assert A.stop() == 0
            A = None

            # the same device without queue pairs: both session rungs fail when the session is made
            cfg, sock, _ = _config(tmp_path / "a2", "crypto_aesni_gcm0,max_nb_queue_pairs=0")
            A = GatewayProc(t.gA, cfg, sock, tmp_path / "gwA2.log")
            _up(t, A)
            assert len(t.ping(10, 0.02)["got"]) == 10
            c = A.child()
            assert c is not None and c["engine"] == "dpdk-cpu" and c["placement"] == "software:ipsec-mb-core", c
            skipped = c["placement_skipped"]
            assert "lookaside-crypto:crypto_aesni_gcm0: crypto_aesni_gcm0 has no queue pairs" in skipped, skipped
            assert "cpu-crypto:crypto_aesni_gcm0: crypto_aesni_gcm0 has no queue pairs" in skipped, skipped
            assert "not on lookaside-crypto:crypto_aesni_gcm0: crypto_aesni_gcm0 has no queue pairs" in \
                A.cli("list-sas")
            assert "on software:ipsec-mb-core (not on lookaside-crypto:crypto_aesni_gcm0" in A.text()
        finally:
            for g in (A, B):
                if g is not None:
                    g.stop()
