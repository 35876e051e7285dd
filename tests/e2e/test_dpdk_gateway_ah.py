"""AH in the DPDK gateway worker (``ipsecgw run`` with ``io: dpdk``): IP protocol 51 both ways.

host A - gw A (DPDK on net_af_packet vdevs) === gw B (our gateway, kernel I/O) - host B, an AH CHILD SA
(``ah_proposals``).  The worker protects with the AH core and takes protocol 51 addressed to the gateway
into it; ping and a TCP stream (with a SHA-256 check, through the worker's ICMP "fragmentation needed" for
AH's overhead) go through; every packet captured on the transit is AH and verifies with gw A's
``export-keys`` lines (scapy's AH for HMAC, RFC 4543 on cryptography's AES-GCM for GMAC).  With a cryptodev
that does take HMAC-SHA256 for ESP (crypto_aesni_mb) in the vdevs, placement still puts the AH SAs on the
core's ipsec-mb and list-sas says why the cryptodev rungs were skipped.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from support.ah_gateway import ah_child, carry_and_verify
from support.dpdk_topology import dpdk_config, host_offloads_off
from support.gateway_harness import GatewayProc, acquire_lines
from support.netns_tools import Topology, gateway_config

from fastpath.dpdk import eal
from fastpath.placement import AH_NOT_OFFLOADED

_ok, _why = eal.availability()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not _ok, reason=f"DPDK binding unavailable: {_why}"),
              pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")]


@pytest.mark.parametrize("proposal,integ,cryptodev", [("sha256", "hmac-sha256-128", "crypto_aesni_mb0"),
                                                      ("aes128gmac", "aes-gmac-128", None)])
def test_dpdk_worker_carries_ah(tmp_path: Path, proposal: str, integ: str, cryptodev: str | None) -> None:
    with Topology(f"da{os.getpid() % 10000}") as t:
        host_offloads_off(t.hA, "v0a")
        cfg_a, sock_a, _ = dpdk_config(tmp_path, crypto_vdevs=(cryptodev,) if cryptodev else ())
        cfg_a.write_text(cfg_a.read_text().replace("memory_mb: 128", "memory_mb: 256"))   # + the cryptodev's
        ah_child(cfg_a, proposal)
        cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=False, log_level="info")
        ah_child(cfg_b, proposal)
        B = GatewayProc(t.gB, cfg_b, sock_b, tmp_path / "gwB.log")
        A = None
        try:
            A = GatewayProc(t.gA, cfg_a, sock_a, tmp_path / "gwA.log")
            carry_and_verify(t, A, integ, tmp_path)
            assert acquire_lines(A.text()), "the first ping must raise an ACQUIRE"
            c = A.child()
            assert c is not None and c["proposal"] == f"AH/{integ}" and c["engine"] == "dpdk-cpu", c
            assert c["placement"] == "software:ipsec-mb-core", c
            if cryptodev:
                skipped = c["placement_skipped"]
                assert f"lookaside-crypto:{cryptodev}: {AH_NOT_OFFLOADED}" in skipped, skipped
                assert f"cpu-crypto:{cryptodev}: {AH_NOT_OFFLOADED}" in skipped, skipped
            assert c["counters"]["out"]["bytes"] > 1 << 20 and c["counters"]["in"]["packets"] > 20, c
            deadline = time.monotonic() + 3          # the worker's counters file is written once a second
            while True:
                dp = A.json("status")["io"]["dpdk"]
                if dp.get("decrypted", 0) > 20 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert dp["protect"] > 700 and dp["decrypted"] > 20 and not dp.get("esp_drops"), dp
        finally:
            for g in (A, B):
                if g is not None:
                    g.stop()
