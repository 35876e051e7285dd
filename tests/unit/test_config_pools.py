"""``pools:`` and the remote-access keys of a connection (pools, vips, dynamic selectors) in the YAML."""

from __future__ import annotations

import ipaddress

import pytest

from control.config import ConfigError, parse_config
from control.pools import Pools

GW = """\
pools:
  rw: {addrs: 10.99.0.0/24, dns: [10.2.0.53, "fd00::53"]}
  rw6: {addrs: "fd00:99::10-fd00:99::ff"}
connections:
  rw:
    local_addrs: [192.0.2.1]
    pools: [rw, rw6]
    local: {auth: psk, id: gw.example}
    remote: {auth: psk}
    children:
      rw:
        local_ts: 10.2.0.0/16
        remote_ts: dynamic
secrets:
  ike-rw: {secret: road-warrior-secret}
"""

CLIENT = """\
connections:
  home:
    local_addrs: [192.0.2.7]
    remote_addrs: [192.0.2.1]
    vips: [0.0.0.0]
    local: {auth: psk, id: alice@example.org}
    remote: {auth: psk, id: gw.example}
    children:
      home:
        local_ts: dynamic
        remote_ts: 10.2.0.0/16
secrets:
  ike-rw: {secret: road-warrior-secret}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "gw.yaml")
    return exc.value.problems


def test_gateway_with_pools_converts() -> None:
    cfg = parse_config(GW, "gw.yaml")
    assert list(cfg.pools) == ["rw", "rw6"]
    assert cfg.pools["rw"].dns == [ipaddress.ip_address("10.2.0.53"), ipaddress.ip_address("fd00::53")]
    assert cfg.pools["rw6"].version == 6
    conn = cfg.connections["rw"]
    spec = conn.children[0]
    assert spec.remote_dynamic and not spec.local_dynamic
    pools = Pools()
    ike = conn.ike_config(cfg.gateway, addresses=pools)
    assert ike.pools == ("rw", "rw6") and ike.addresses is pools
    assert ike.children[0].remote_dynamic
    assert {t.start.version for t in ike.children[0].remote_ts} == {4, 6}


def test_client_with_vips_converts() -> None:
    cfg = parse_config(CLIENT, "c.yaml")
    ike = cfg.connections["home"].ike_config(cfg.gateway)
    assert ike.vips == (4,) and ike.addresses is None
    assert str(ike.children[0].local_ts[0].start) == "0.0.0.0"


@pytest.mark.parametrize("old,new,want", [
    ("addrs: 10.99.0.0/24,", "addrs: 10.99.0.300/24,", "gw.yaml:2: pools.rw.addrs: expected a subnet"),
    ("addrs: 10.99.0.0/24,", "addrs: 10.99.0.9-10.99.0.1,", "got '10.99.0.9-10.99.0.1': the range ends before "
                                                           "it starts"),
    ("addrs: 10.99.0.0/24,", "", "pools.rw.addrs: expected a subnet"),
    ("dns: [10.2.0.53,", "dns: [dns.example,", "pools.rw.dns[0]: expected an IP address of a DNS server"),
    ("pools: [rw, rw6]", "pools: [rw, nosuch]", "connections.rw.pools: expected the name of a pool in the pools "
                                               "section (rw, rw6), got 'nosuch'"),
    ("remote_ts: dynamic", "remote_ts: [dynamic, 10.9.0.0/16]", "either dynamic alone or subnets"),
    ("  rw6: {addrs:", "  rw6: {colour: blue, addrs:", "pools.rw6.colour"),
])
def test_pool_mistakes(old: str, new: str, want: str) -> None:
    assert old in GW
    got = problems(GW.replace(old, new, 1))
    assert want in "\n".join(got)
    assert len(got) == 1, got       # a broken pool is one problem, not one more where it is named


@pytest.mark.parametrize("old,new,want", [
    ("vips: [0.0.0.0]", "vips: [10.99.0.5]", "connections.home.vips[0]: expected 0.0.0.0 (ask for an IPv4 "
                                             "address) or :: (an IPv6 one), got '10.99.0.5'"),
    ("    vips: [0.0.0.0]\n", "", "children.home.local_ts: expected subnets (local_ts: dynamic needs vips"),
    ("remote_ts: 10.2.0.0/16", "remote_ts: dynamic\n        start_action: trap",
     "children.home.start_action: expected none or start (remote_ts is dynamic), got trap"),
])
def test_client_mistakes(old: str, new: str, want: str) -> None:
    assert old in CLIENT
    got = "\n".join(problems(CLIENT.replace(old, new, 1)))
    assert want in got


def test_dynamic_children_route_the_pools_not_everything() -> None:
    from control.fastpath_plan import tun_routes

    routes = tun_routes(parse_config(GW, "gw.yaml"))
    assert routes == ["10.99.0.0/24", "fd00:99::10/124", "fd00:99::20/123", "fd00:99::40/122",
                      "fd00:99::80/121"]


def test_check_lists_the_pools(tmp_path, capsys) -> None:
    from control.cli import main

    f = tmp_path / "gw.yaml"
    f.write_text(GW)
    assert main(["check", "-c", str(f)]) == 0
    out = capsys.readouterr().out
    assert "  pool rw: 10.99.0.0/24 (254 address(es), dns 10.2.0.53, fd00::53)" in out
    assert "  pool rw6: fd00:99::10-fd00:99::ff (240 address(es))" in out
