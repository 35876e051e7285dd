"""``local_addrs: [%any]`` (or no local_addrs): the config loader accepts it, and two real
``ipsecgw run --control-only`` daemons in network namespaces listen on every address they have, answer
on the address a request arrived at, initiate from the route's source address, and install SAs that
carry those actual addresses (and, without a configured id, use that address as their identity)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, installed_child, pair_config, region_sas
from support.strongswan import NetnsPair

from cdefs.sa import Direction
from control.config import ConfigError, parse_config


def test_config_any_local_addrs() -> None:
    base = """
connections:
  c:
{local}    remote_addrs: [192.0.2.2]
    remote: {{auth: psk, id: gw-b.example}}
{id}    children: {{net: {{local_ts: [10.1.0.0/16], remote_ts: [10.2.0.0/16]}}}}
secrets: {{ike-x: {{id: [gw-b.example], secret: "0123456789abcdef"}}}}
"""
    for local in ("    local_addrs: ['%any']\n", "    local_addrs: '%any'\n", ""):
        cfg = parse_config(base.format(local=local, id=""), "any.yaml")
        conn = cfg.connections["c"]
        assert conn.local_addrs == ["%any"] and conn.any_local and conn.local_id == ""
        ike = conn.ike_config(cfg.gateway, local_ip="192.0.2.1")
        assert str(ike.local_id) == "192.0.2.1" and ike.psk == b"0123456789abcdef"
    with_id = "    local: {auth: psk, id: gw-a.example}\n"
    cfg = parse_config(base.format(local="    local_addrs: ['%any']\n", id=with_id), "any.yaml")
    assert str(cfg.connections["c"].ike_config(cfg.gateway, local_ip="192.0.2.1").local_id) == "gw-a.example"
    with pytest.raises(ConfigError) as e:
        parse_config(base.format(local="    local_addrs: [192.0.2.1, '%any']\n", id=""), "any.yaml")
    assert "any.yaml:4: connections.c.local_addrs: expected either addresses or %any alone" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(base.format(local="    local_addrs: [gw.example]\n", id=""), "any.yaml")
    assert "connections.c.local_addrs[0]: expected an IP address or %any" in str(e.value)


def _udp_listeners(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ss", "-unl"], capture_output=True, text=True).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_daemons_with_any_local_addrs(tmp_path: Path) -> None:
    """A has 192.0.2.1 and 198.51.100.1 (on lo); B reaches A's second address through a route and
    initiates from its route source.  Neither names a local address, and A names no id either."""
    tag = f"ay{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        net.add_lo_address(net.a, "198.51.100.1/32")
        subprocess.run(["ip", "-n", net.b, "route", "add", "198.51.100.0/24", "via", net.a_ip], check=True)
        a = pair_config(tmp_path, "a", local="'%any'", remote=net.b_ip, lid=None, rid="gw-b.example",
                        lts="10.1.0.0/16", rts="10.2.0.0/16", start="none")
        b = pair_config(tmp_path, "b", local=None, remote="198.51.100.1", lid="gw-b.example", rid="198.51.100.1",
                        lts="10.2.0.0/16", rts="10.1.0.0/16", start="start")
        da = DaemonProc(*a, netns=net.a)
        try:
            listening = _udp_listeners(net.a)
            for addr in ("198.51.100.1:500", "192.0.2.1:500", "198.51.100.1:4500", "127.0.0.1:500"):
                assert addr in listening, listening
            db = DaemonProc(*b, netns=net.b)
            try:
                ca = da.wait_for(lambda sas: installed_child(sas) and sas)
                cb = db.wait_for(lambda sas: installed_child(sas) and sas)
                ike_a = next(s for s in ca if s["state"] == "ESTABLISHED")
                ike_b = next(s for s in cb if s["state"] == "ESTABLISHED")
                # A answered on the address the request reached; B sent from its route source
                assert ike_a["local"]["addr"] == "198.51.100.1" and ike_a["remote"]["addr"] == net.b_ip
                assert ike_a["local"]["id"] == "198.51.100.1"          # the address is the identity
                assert ike_b["local"]["addr"] == net.b_ip and ike_b["remote"]["addr"] == "198.51.100.1"
                # the installed SAs carry those addresses
                time.sleep(0.2)
                for shm, here, there in ((a[2], "198.51.100.1", net.b_ip), (b[2], net.b_ip, "198.51.100.1")):
                    sas = list(region_sas(shm).values())
                    outs = [sa for sa, d in sas if d == Direction.OUT]
                    ins = [sa for sa, d in sas if d == Direction.IN]
                    assert outs and ins
                    assert all((str(sa.src), str(sa.dst)) == (here, there) for sa in outs), outs
                    assert all((str(sa.src), str(sa.dst)) == (there, here) for sa in ins), ins
            finally:
                db.stop()
        finally:
            da.stop()
        assert "local_addrs %any: IKE on" in da.log_text()
