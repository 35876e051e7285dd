"""An AH CHILD SA between two gateways, end to end: the config change that turns a test pair's ESP child
into an AH one, and the run that carries ping and TCP through it and verifies every AH packet captured on
the transit with nothing but ``ipsecgw export-keys``' ah_sa lines (support.ah.wire_verifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.ah import exported_ah_sas, wire_verifier
from support.netns_tools import V6, Tcpdump, Topology


def ah_child(cfg: Path, proposal: str, engine: str | None = None) -> None:
    """Rewrite a support.netns_tools / support.dpdk_topology gateway config: the child negotiates AH with
    ``proposal`` instead of ESP, export-keys is on, and (kernel I/O) the fastpath runs ``engine``."""
    text = cfg.read_text()
    assert "esp_proposals: [aes128gcm16]" in text
    text = text.replace("esp_proposals: [aes128gcm16]", f"ah_proposals: [{proposal}]")
    if engine is not None:
        assert "engine: best" in text
        text = text.replace("engine: best", f"engine: {engine}")
    cfg.write_text(text.replace("gateway:\n", "gateway:\n  export_keys: yes\n", 1))


def carry_and_verify(t: Topology, a: Any, integ: str, tmp: Path, *, outer: int = 4, inner6: bool = False) -> None:
    """With gateway a (a support.gateway_harness.GatewayProc) and its peer up in t: ping (the first raises the
    ACQUIRE) and a 1 MiB TCP stream from host A to host B (also over inner IPv6 when inner6), captured on gw
    B's transit interface; then every captured packet is AH (protocol 51, outer IPv``outer``), its ICV verifies
    with a's exported keys, and its inner packet is between the two hosts."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH
    from scapy.utils import rdpcap

    cap = Tcpdump(t.gB, "v1b", tmp / "wire.pcap", "ip proto 51 or ip proto 50 or udp port 4500 or "
                                                   "ip6 proto 51 or ip6 proto 50")
    try:
        t.ping(2, 0.2)
        child = a.wait_child()
        assert child["proposal"] == f"AH/{integ}", child
        res = t.ping(20, 0.02, size=600)
        assert len(res["got"]) == 20, a.text()[-3000:]
        t.tcp(5311, 1 << 20)
        hosts = [{"10.1.0.2", "10.2.0.2"}]
        if inner6:
            res = t.ping(20, 0.02, dst=V6["hB"], size=600)
            assert len(res["got"]) == 20, a.text()[-3000:]
            t.tcp(5312, 1 << 20, dst=V6["hB"])
            hosts.append({V6["hA"], V6["hB"]})
    finally:
        cap.stop()
    sas = exported_ah_sas(a.cli("export-keys"))
    assert len(sas) == 2 and {s[3] for s in sas} == {integ}, sas      # one each way
    check = {s[2]: wire_verifier(*s) for s in sas}
    layer = IP if outer == 4 else IPv6
    pkts = [p[layer] for p in rdpcap(str(tmp / "wire.pcap")) if layer in p]
    assert {p.proto if outer == 4 else p.nh for p in pkts} == {51}   # no ESP, no ESP-in-UDP
    assert len(pkts) >= len(hosts) * (2 * 20 + 700)                  # pings both ways and the TCP streams
    seen = []
    for p in pkts:
        inner = check[p[AH].spi](p)
        pair = {inner.src, inner.dst}
        assert pair in hosts, inner.summary()
        seen.append(pair)
    assert all(h in seen for h in hosts)
