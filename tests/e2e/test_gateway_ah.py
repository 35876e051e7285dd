"""Issue 17 end to end: two ipsecgw gateways (``ipsecgw run``, kernel I/O) negotiate an AH CHILD SA
(``ah_proposals``) and carry ping and a TCP stream through it; the transit wire carries IP protocol 51 and
nothing else protected, and every AH packet captured there verifies with nothing but the lines
``ipsecgw export-keys`` prints: HMACs in scapy's AH, AES-GMAC (which scapy's AH lacks) in RFC 4543's
construction on cryptography's AES-GCM (support.ah.gmac_icv).

hostA - gwA === gwB - hostB in network namespaces (support.netns_tools.Topology), PSK, each case on the
engine ``ipsecgw run`` picks (``best``) and one on the reference engine; over IPv4 outer addresses, and
over an IPv6-only transit (AH on raw IPv6 sockets both ways) carrying inner IPv4 and IPv6.  The DPDK
worker's AH: tests/e2e/test_dpdk_gateway_ah.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.ah_gateway import ah_child, carry_and_verify
from support.gateway_harness import GatewayProc
from support.netns_tools import V6, Topology, gateway_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
              pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")]


@pytest.mark.parametrize("proposal,integ,engine,outer", [("sha256", "hmac-sha256-128", "best", "ipv4"),
                                                         ("sha1", "hmac-sha1-96", "reference", "ipv4"),
                                                         ("aes128gmac", "aes-gmac-128", "best", "ipv4"),
                                                         ("sha512", "hmac-sha512-256", "best", "ipv6"),
                                                         ("aes256gmac", "aes-gmac-256", "best", "ipv6")])
def test_ah_child_carries_ping_and_tcp_and_the_wire_verifies(tmp_path: Path, proposal: str, integ: str,
                                                              engine: str, outer: str) -> None:
    v6 = outer == "ipv6"
    with Topology(f"ah{os.getpid() % 10000}", ipv6=v6) as t:
        gws: list[GatewayProc] = []
        try:
            for side, ns in (("A", t.gA), ("B", t.gB)):
                cfg, sock, _ = gateway_config(tmp_path, side, encap=False, log_level="info", outer=outer)
                ah_child(cfg, proposal, engine)
                gws.append(GatewayProc(ns, cfg, sock, tmp_path / f"gw{side}.log"))
            carry_and_verify(t, gws[0], integ, tmp_path, outer=6 if v6 else 4, inner6=v6)
            if v6:
                ike = next(i for i in gws[0].json("list-sas") if i.get("state") == "ESTABLISHED")
                assert ike["remote"]["addr"] == V6["gB"], ike
        finally:
            for g in gws:
                g.stop()
