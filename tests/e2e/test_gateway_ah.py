"""Issue 17 end to end: two ipsecgw gateways (``ipsecgw run``, kernel I/O) negotiate an AH CHILD SA
(``ah_proposals``) and carry ping and a TCP stream through it; the transit wire carries IP protocol 51 and
nothing else protected, and every AH packet captured there verifies with nothing but the lines
``ipsecgw export-keys`` prints: HMACs in scapy's AH, AES-GMAC (which scapy's AH lacks) in RFC 4543's
construction on cryptography's AES-GCM (support.ah.gmac_icv).

hostA - gwA === gwB - hostB in network namespaces (support.netns_tools.Topology), PSK, IPv4, each case on
the engine ``ipsecgw run`` picks (``best``) and one on the reference engine."""

from __future__ import annotations

import csv
import ipaddress
import os
import shutil
from pathlib import Path

import pytest
from support.ah import SCAPY_AH_AUTH, gmac_icv
from support.gateway_harness import GatewayProc
from support.netns_tools import Tcpdump, Topology, gateway_config

from cdefs.sa import SA

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
              pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")]


def ah_config(tmp: Path, side: str, proposal: str, engine: str) -> tuple[Path, Path, Path]:
    cfg, sock, shm = gateway_config(tmp, side, encap=False, log_level="info")
    text = cfg.read_text()
    assert "esp_proposals: [aes128gcm16]" in text and "engine: best" in text
    text = text.replace("esp_proposals: [aes128gcm16]", f"ah_proposals: [{proposal}]")
    text = text.replace("engine: best", f"engine: {engine}")
    cfg.write_text(text.replace("gateway:\n", "gateway:\n  export_keys: yes\n", 1))
    return cfg, sock, shm


def exported_ah_sas(keys: str) -> list[tuple[str, str, int, str, bytes]]:
    """(src, dst, spi, algorithm, key) of each line of export-keys' ah_sa table."""
    section = keys.split("# ah_sa\n", 1)[1].split("\n# ", 1)[0]
    out = []
    for fam, src, dst, spi, alg, key in csv.reader(section.splitlines()):
        assert fam == "IPv4"
        out.append((src, dst, int(spi, 16), alg, bytes.fromhex(key.removeprefix("0x"))))
    return out


def verifier(src: str, dst: str, spi: int, alg: str, key: bytes):
    """A function that raises unless an AH packet (scapy IP) of this SA carries a right ICV."""
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import AH, SecurityAssociation

    if alg in SCAPY_AH_AUTH:
        sa = SecurityAssociation(AH, spi=spi, auth_algo=SCAPY_AH_AUTH[alg], auth_key=key,
                                 tunnel_header=IP(src=src, dst=dst))
        return lambda p: IP(bytes(sa.decrypt(p)))       # IPSecIntegrityError on a bad ICV
    ours = SA(spi=spi, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(dst), enc="null", enc_key=b"",
              integ=alg, integ_key=key, proto="ah")

    def check(p):
        raw = bytes(p)
        icv = raw[20 + 12:20 + 12 + 24]
        assert icv == gmac_icv(ours, raw, p[AH].seq), f"bad GMAC ICV, seq {p[AH].seq}"
        return IP(bytes(p[AH].payload))
    return check


@pytest.mark.parametrize("proposal,integ,engine", [("sha256", "hmac-sha256-128", "best"),
                                                   ("sha1", "hmac-sha1-96", "reference"),
                                                   ("aes128gmac", "aes-gmac-128", "best")])
def test_ah_child_carries_ping_and_tcp_and_the_wire_verifies(tmp_path: Path, proposal: str, integ: str,
                                                              engine: str) -> None:
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import AH
    from scapy.utils import rdpcap

    with Topology(f"ah{os.getpid() % 10000}") as t:
        gws: list[GatewayProc] = []
        try:
            for side, ns in (("A", t.gA), ("B", t.gB)):
                cfg, sock, _ = ah_config(tmp_path, side, proposal, engine)
                gws.append(GatewayProc(ns, cfg, sock, tmp_path / f"gw{side}.log"))
            a = gws[0]
            cap = Tcpdump(t.gB, "v1b", tmp_path / "wire.pcap", "ip proto 51 or ip proto 50 or udp port 4500")
            t.ping(2, 0.2)                               # the first raises the ACQUIRE
            child = a.wait_child()
            assert child["proposal"] == f"AH/{integ}", child
            res = t.ping(20, 0.02, size=600)
            assert len(res["got"]) == 20, a.text()[-3000:]
            t.tcp(5311, 1 << 20)
            cap.stop()
            keys = a.cli("export-keys")
        finally:
            for g in gws:
                g.stop()
    sas = exported_ah_sas(keys)
    assert len(sas) == 2 and {s[3] for s in sas} == {integ}      # one each way
    check = {s[2]: verifier(*s) for s in sas}
    pkts = [p[IP] for p in rdpcap(str(tmp_path / "wire.pcap")) if IP in p]
    assert {p.proto for p in pkts} == {51}                       # no ESP, no ESP-in-UDP
    assert len(pkts) >= 2 * 22 + 700                             # pings both ways and the TCP stream
    for p in pkts:
        inner = check[p[AH].spi](p)
        assert {inner.src, inner.dst} == {"10.1.0.2", "10.2.0.2"}, inner.summary()
