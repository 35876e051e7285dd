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
    ("  fastpath: {io: fpga}\n", "gw.yaml:2: gateway.fastpath.io: expected one of kernel, dpdk"),
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
    from control.fastpath_plan import auto_tun_mtu, tun_routes

    cfg = _cfg("  log_level: info\n")
    # outer 1500 - (IPv4 20 + UDP 8 + ESP 8 + IV 8 + ICV 16), padded to 4 with 2 trailer bytes
    assert auto_tun_mtu(cfg) == (1500 - 60) // 4 * 4 - 2
    assert tun_routes(cfg) == ["10.2.0.0/24", "10.3.0.0/24"]


def test_plan_carries_what_the_fastpath_reads() -> None:
    """The fastpath is given a FastpathPlan, not the configuration: everything it used to work out from the
    connections is in it, resolved."""
    from control.fastpath_plan import auto_tun_mtu, fastpath_plan
    from fastpath.plan import FastpathPlan

    cfg = _cfg("  shm: {path: /dev/shm/plan-test.shm}\n  ike_port: 1500\n  natt_port: 14500\n")
    plan = fastpath_plan(cfg)
    assert plan == FastpathPlan(settings=cfg.gateway.fastpath, shm_path="/dev/shm/plan-test.shm", ike_port=1500,
                                natt_port=14500, local_addrs=("192.0.2.1",), peer_addrs=("192.0.2.2",),
                                ipv6_outer=False, routes=("10.2.0.0/24", "10.3.0.0/24"), tun_mtu=auto_tun_mtu(cfg))
    assert fastpath_plan(_cfg("  fastpath: {tun_mtu: 1400}\n")).tun_mtu == 1400
    any_v6 = BASE.replace("local_addrs: [192.0.2.1]", "local_addrs: ['%any']").replace(
        "remote_addrs: [192.0.2.2]", "remote_addrs: ['2001:db8::2', 192.0.2.2]")
    plan = fastpath_plan(parse_config(any_v6.format(gateway="  log_level: info\n"), "gw.yaml"))
    assert (plan.local_addrs, plan.peer_addrs, plan.ipv6_outer) == ((), ("2001:db8::2", "192.0.2.2"), True)


def test_clear_side_af_packet() -> None:
    assert (FastpathConfig().clear, FastpathConfig().clear_interface) == ("tun", "")
    fp = _cfg("  fastpath: {clear: af_packet, clear_interface: eth1, engine: openssl}\n").gateway.fastpath
    assert (fp.clear, fp.clear_interface, fp.engine) == ("af_packet", "eth1", "openssl")
    assert _cfg("  fastpath: {clear: tun, tun: gw0}\n").gateway.fastpath.clear == "tun"


@pytest.mark.parametrize("text,needle", [
    ("  fastpath: {clear: pcap}\n", "gw.yaml:2: gateway.fastpath.clear: expected one of tun, af_packet, got 'pcap'"),
    ("  fastpath:\n    engine: best\n    clear: af_packet\n",
     "gw.yaml:4: gateway.fastpath.clear_interface: expected the LAN-facing interface name with clear: af_packet"),
    ("  fastpath: {clear_interface: eth1}\n",
     "gateway.fastpath.clear_interface: expected no clear_interface unless clear is af_packet, got 'eth1'"),
    ("  fastpath: {clear: af_packet, clear_interface: a-very-long-interface-name}\n",
     "gateway.fastpath.clear_interface: expected an interface name of 1 to 15 characters"),
    ("  fastpath: {clear: af_packet, clear_interface: eth1, tun_mtu: 1400}\n",
     "gateway.fastpath.tun_mtu: expected no TUN setting with clear: af_packet"),
    ("  fastpath: {clear: af_packet, clear_interface: eth1, tun_addrs: [10.1.0.1/32]}\n",
     "gateway.fastpath.tun_addrs: expected no TUN setting with clear: af_packet"),
    ("  fastpath: {clear: af_packet, clear_interface: eth1, clear_vlan: 5}\n",
     "gateway.fastpath.clear_vlan: expected one of the known keys"),
    ("  fastpath: {io: dpdk, clear: af_packet, clear_interface: eth1}\n",
     "gateway.fastpath.clear: expected tun (af_packet is a clear side of io: kernel), got af_packet with io: dpdk"),
])
def test_clear_side_errors_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        _cfg(text)
    assert any(needle in p for p in ei.value.problems), ei.value.problems


def test_check_command_reports_clear_side_errors(tmp_path) -> None:
    """`ipsecgw check` names the same problems (exit code 2) without starting anything."""
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "gw.yaml"
    cfg.write_text(BASE.format(gateway="  fastpath: {clear: af_packet}\n"))
    r = subprocess.run([sys.executable, "-m", "control.cli", "check", "-c", str(cfg)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "gateway.fastpath.clear_interface: expected the LAN-facing interface name" in r.stdout + r.stderr


# -- io: dpdk (docs/dpdk.md) ----------------------------------------------------------------------

DPDK = """\
  fastpath:
    io: dpdk
    dpdk:
      vdevs: ["net_af_packet0,iface=lan0", "net_af_packet1,iface=wan0"]
      clear_port: net_af_packet0
      protected_port: net_af_packet1
{extra}"""


def test_dpdk_section() -> None:
    fp = _cfg(DPDK.format(extra="      burst: 64\n      cores: 0-1\n      slice_ms: 5\n")).gateway.fastpath
    d = fp.dpdk
    assert fp.io == "dpdk" and d is not None
    assert (d.clear_port, d.protected_port, d.clear_interface, d.protected_interface) == \
        ("net_af_packet0", "net_af_packet1", "lan0", "wan0")
    assert (d.burst, d.cores, d.slice_ms, d.memory_mb) == (64, "0-1", 5, 256)
    assert _cfg("  log_level: info\n").gateway.fastpath.dpdk is None


@pytest.mark.parametrize("text,needle", [
    ("  fastpath: {io: dpdk}\n", "gw.yaml:2: gateway.fastpath.dpdk: expected a dpdk section"),
    ("  fastpath: {dpdk: {burst: 8}}\n", "gateway.fastpath.dpdk: expected no dpdk section unless io is dpdk"),
    (DPDK.format(extra="      burst: 999\n"), "gw.yaml:8: gateway.fastpath.dpdk.burst: expected an integer from 1"),
    (DPDK.format(extra="      cores: all\n"), "gateway.fastpath.dpdk.cores: expected an EAL core list"),
    (DPDK.format(extra="      colour: blue\n"), "gateway.fastpath.dpdk.colour: expected one of the known keys"),
    (DPDK.replace("clear_port: net_af_packet0", "clear_port: net_pcap0").format(extra=""),
     "gateway.fastpath.dpdk.clear_port: expected one of the devices in vdevs or pci (net_af_packet0, net_af_packet1)"),
    (DPDK.replace("protected_port: net_af_packet1", "protected_port: net_af_packet0").format(extra=""),
     "gateway.fastpath.dpdk.protected_port: expected a port other than clear_port"),
    (DPDK.replace('["net_af_packet0,iface=lan0", "net_af_packet1,iface=wan0"]',
                  "[net_af_packet0,iface=lan0, net_ring0]").replace("net_af_packet1", "net_ring0").format(extra=""),
     "gateway.fastpath.dpdk.vdevs[1]: expected a device name with its arguments"),
    (DPDK.replace("iface=wan0", "qpairs=1").format(extra=""),
     "gateway.fastpath.dpdk.protected_interface: expected the kernel interface of the protected port"),
    ("  fastpath:\n    tun: gw0\n" + DPDK.format(extra="").replace("  fastpath:\n", ""),
     "gateway.fastpath.tun: expected no TUN or clear-side setting with io: dpdk"),
])
def test_dpdk_errors_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        _cfg(text)
    assert any(needle in p for p in ei.value.problems), ei.value.problems
