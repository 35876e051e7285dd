"""``ipsecgw import-swanctl`` against real strongSwan: gateway A runs the configuration converted from
the swanctl.conf charon would need as gateway A (the mirror of what charon runs as gateway B,
support/gateway_harness.py's charon_gateway_b), and charon runs the original peer configuration.

Shown: the conversion exits 0 with nothing left out, ``ipsecgw check`` accepts the result, and a tunnel
comes up with charon both ways (our trap raised by host A's ping; charon's ``swanctl --initiate``):
charon lists our SPIs and pings pass in both directions through it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.gateway_harness import charon_gateway_b, first_ping, gateway_a_with_charon
from support.netns_tools import PSK, Topology, gateway_config
from support.strongswan import interop_marks, swanctl_conf

pytestmark = interop_marks()
ROOT = Path(__file__).resolve().parents[2]


def _ipsecgw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _converted_gateway_a(tmp: Path, start_action: str) -> tuple[Path, Path]:
    """Gateway A's YAML: gateway_config's gateway section (namespaces, TUN, socket) and the connections
    and secrets converted from gateway A's swanctl.conf."""
    conf = tmp / "swanctl-a.conf"
    conf.write_text(swanctl_conf(local="192.0.2.1", remote="192.0.2.2", local_id="gw-a.example",
                                 remote_id="gw-b.example", psk=PSK, ike="aes128gcm16-prfsha256-x25519",
                                 esp="aes128gcm16", local_ts="10.1.0.0/24", remote_ts="10.2.0.0/24",
                                 child_extra=f"start_action = {start_action}"))
    r = _ipsecgw("import-swanctl", str(conf))
    assert r.returncode == 0 and "not converted" not in r.stderr, r.stderr
    base, sock, _ = gateway_config(tmp, "A", encap=False)
    gateway = base.read_text().split("connections:", 1)[0]
    cfg = tmp / "gwA-converted.yaml"
    cfg.write_text(gateway + r.stdout)
    check = _ipsecgw("check", "-c", str(cfg))
    assert check.returncode == 0 and "peer/net: ESP tunnel, aes128gcm16" in check.stdout, check.stderr
    return cfg, sock


@pytest.mark.parametrize("initiator", ["ipsecgw", "charon"])
def test_converted_config_brings_up_a_tunnel_with_charon(tmp_path: Path, initiator: str) -> None:
    cfg, sock = _converted_gateway_a(tmp_path, "trap" if initiator == "ipsecgw" else "none")
    with Topology(f"is{initiator[0]}{id(tmp_path) % 1000}") as t:
        charon = charon_gateway_b(t)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            if initiator == "ipsecgw":
                first_ping(t, gw, charon)
            else:
                charon.swanctl("--initiate", "--child", "net", timeout=30)
            c = gw.wait_child()
            listing = charon.list_sas()
            assert c["spi_in"] in listing and c["spi_out"] in listing, listing
            ike = gw.json("list-sas")[0]
            assert ike["initiator"] == (initiator == "ipsecgw")
            assert ike["local"]["id"] == "gw-a.example" and ike["remote"]["id"] == "gw-b.example"
            res = t.ping(20, 0.02)
            assert len(res["got"]) == 20, res
            assert gw.child()["counters"]["in"]["packets"] >= 20
    assert PSK not in gw.text()
