"""gateway.fastpath in the YAML configuration: defaults, accepted values, and errors that name the line and path."""

from __future__ import annotations

import pytest

from control.config import ConfigError, FastpathConfig, parse_config

BASE = """\
gateway:
{gateway}connections:
  peer:
    local_addrs: [192.0.2.1]
    remote_addrs: [192.0.2.2]
    proposals: [aes128gcm16-prfsha256-x25519]
    local: {{auth: psk, id: a.example}}
    remote: {{auth: psk, id: b.example}}
    children:
      net:
        local_ts: [10.1.0.0/24]
        remote_ts: [10.2.0.0/24, 10.3.0.0/24]
        esp_proposals: [aes128gcm16]
secrets:
  ike-x: {{secret: "fastpath-config-test-psk"}}
"""


def _cfg(gateway: str):
    return parse_config(BASE.format(gateway=gateway), "gw.yaml")


def test_defaults_and_values() -> None:
    assert _cfg("  log_level: info\n").gateway.fastpath == FastpathConfig()
    fp = _cfg("  fastpath: {io: kernel, engine: openssl, tun: gw0, tun_mtu: 1400, tun_addrs: [10.1.0.1/32],"
              " outer_mtu: 9000, batch: 64, hold: 0}\n").gateway.fastpath
    assert (fp.engine, fp.tun, fp.tun_mtu, fp.tun_addrs, fp.outer_mtu, fp.batch, fp.hold) == \
        ("openssl", "gw0", 1400, ["10.1.0.1/32"], 9000, 64, 0)


@pytest.mark.parametrize("text,needle", [
    ("  fastpath: {io: dpdk}\n", "gw.yaml:2: gateway.fastpath.io: expected one of kernel"),
    ("  fastpath: {engine: fast}\n", "gateway.fastpath.engine: expected one of best, ipsec-mb"),
    ("  fastpath: {tun: a-very-long-interface-name}\n", "gateway.fastpath.tun: expected an interface name"),
    ("  fastpath: {tun_mtu: 100}\n", "gateway.fastpath.tun_mtu: expected 0 (auto) or an MTU"),
    ("  fastpath: {outer_mtu: 70000}\n", "gateway.fastpath.outer_mtu: expected an MTU from 576 to 65535"),
    ("  fastpath: {tun_addrs: [not-an-address]}\n", "gateway.fastpath.tun_addrs[0]: expected an address"),
    ("  fastpath: {queue: 5}\n", "gateway.fastpath"),
])
def test_errors_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        _cfg(text)
    assert any(needle in p for p in ei.value.problems), ei.value.problems


def test_tun_mtu_and_routes_follow_the_config() -> None:
    from fastpath.daemon import auto_tun_mtu, tun_routes

    cfg = _cfg("  log_level: info\n")
    # outer 1500 - (IPv4 20 + UDP 8 + ESP 8 + IV 8 + ICV 16), padded to 4 with 2 trailer bytes
    assert auto_tun_mtu(cfg) == (1500 - 60) // 4 * 4 - 2
    assert tun_routes(cfg) == ["10.2.0.0/24", "10.3.0.0/24"]
