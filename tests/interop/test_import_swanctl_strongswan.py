"""``ipsecgw import-swanctl`` against real strongSwan: gateway A runs the configuration converted from
the swanctl.conf charon would need as gateway A (the mirror of what charon runs as gateway B,
support/gateway_harness.py's charon_gateway_b), and charon runs the original peer configuration.

Shown: the conversion exits 0 with nothing left out (a certificate configuration: only the CA choice
from x509ca/ is reported), ``ipsecgw check`` accepts the result, and a tunnel comes up with charon both
ways (our trap raised by host A's ping; charon's ``swanctl --initiate``), with PSKs and with
certificates (our key found in private/ by the converter): charon lists our SPIs and pings pass in both
directions through it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.gateway_harness import charon_gateway_b, first_ping, gateway_a_with_charon
from support.netns_tools import PSK, Topology, gateway_config
from support.pki import CA, pem_cert, pem_key, write
from support.strongswan import Charon, interop_marks, swanctl_conf, swanctl_conf_pubkey

pytestmark = interop_marks()
ROOT = Path(__file__).resolve().parents[2]


def _ipsecgw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _converted_gateway_a(tmp: Path, swanctl_text: str, reported: list[str]) -> tuple[Path, Path]:
    """Gateway A's YAML: gateway_config's gateway section (namespaces, TUN, socket) and the connections
    and secrets converted from gateway A's swanctl.conf (in tmp/swanctl-a/, swanctl's layout), which
    reports exactly the paths in ``reported``."""
    conf = tmp / "swanctl-a" / "swanctl.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(swanctl_text)
    r = _ipsecgw("import-swanctl", str(conf))
    notes = [line.split(": ")[1] for line in r.stderr.splitlines() if line.startswith("not converted: ")]
    assert r.returncode == 0 and notes == reported, r.stderr
    base, sock, _ = gateway_config(tmp, "A", encap=False)
    gateway = base.read_text().split("connections:", 1)[0]
    cfg = tmp / "gwA-converted.yaml"
    cfg.write_text(gateway + r.stdout)
    check = _ipsecgw("check", "-c", str(cfg))
    assert check.returncode == 0 and "peer/net: ESP tunnel, aes128gcm16" in check.stdout, check.stderr
    return cfg, sock


def _psk_a(start_action: str) -> str:
    return swanctl_conf(local="192.0.2.1", remote="192.0.2.2", local_id="gw-a.example", remote_id="gw-b.example",
                        psk=PSK, ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16", local_ts="10.1.0.0/24",
                        remote_ts="10.2.0.0/24", child_extra=f"start_action = {start_action}")


@pytest.mark.parametrize("initiator", ["ipsecgw", "charon"])
def test_converted_config_brings_up_a_tunnel_with_charon(tmp_path: Path, initiator: str) -> None:
    cfg, sock = _converted_gateway_a(tmp_path, _psk_a("trap" if initiator == "ipsecgw" else "none"), [])
    with Topology(f"is{initiator[0]}{id(tmp_path) % 1000}") as t:
        charon = charon_gateway_b(t)
        _tunnel(t, tmp_path, cfg, sock, charon, initiator)
    text = (tmp_path / "gwA.log").read_text()
    assert PSK not in text and "control stopped (exit code 0)" in text


def test_converted_certificate_config_brings_up_a_tunnel_with_charon(tmp_path: Path) -> None:
    """Both sides authenticate with certificates of one CA, in swanctl's layout on both sides; charon
    initiates (swanctl_conf_pubkey's child has start_action none)."""
    ca = CA()
    cert_a, key_a = ca.issue("gw-a", "p256", sans=["gw-a.example"])
    cert_b, key_b = ca.issue("gw-b", "p256", sans=["gw-b.example"])
    a_dir = tmp_path / "swanctl-a"
    write(a_dir / "x509" / "gw-a.pem", pem_cert(cert_a))
    write(a_dir / "private" / "gw-a.key", pem_key(key_a))
    write(a_dir / "x509ca" / "ca.pem", pem_cert(ca.cert))
    ours = swanctl_conf_pubkey(local="192.0.2.1", remote="192.0.2.2", local_id="gw-a.example",
                               remote_id="gw-b.example", cert="gw-a.pem", ike="aes128gcm16-prfsha256-x25519",
                               esp="aes128gcm16", local_ts="10.1.0.0/24", remote_ts="10.2.0.0/24")
    cfg, sock = _converted_gateway_a(tmp_path, ours, ["connections.peer.remote.cacerts"])
    assert f"key: {a_dir}/private/gw-a.key" in cfg.read_text()
    theirs = swanctl_conf_pubkey(local="192.0.2.2", remote="192.0.2.1", local_id="gw-b.example",
                                 remote_id="gw-a.example", cert="gw-b.pem", ike="aes128gcm16-prfsha256-x25519",
                                 esp="aes128gcm16", local_ts="10.2.0.0/24", remote_ts="10.1.0.0/24")
    files = {"x509/gw-b.pem": pem_cert(cert_b), "private/gw-b.key": pem_key(key_b), "x509ca/ca.pem": pem_cert(ca.cert)}
    with Topology(f"isx{id(tmp_path) % 1000}") as t:
        _tunnel(t, tmp_path, cfg, sock, Charon(t.gB, theirs, files=files), "charon")
    assert "authentication of 'gw-a.example' with ECDSA" in (tmp_path / "charon.log").read_text()


def _tunnel(t: Topology, tmp: Path, cfg: Path, sock: Path, charon: Charon, initiator: str) -> None:
    """Gateway A on cfg and charon: the tunnel up (initiated by either), our SPIs in charon's listing,
    20 pings through; charon's log kept as tmp/charon.log."""
    with gateway_a_with_charon(t, cfg, sock, tmp / "gwA.log", charon) as gw:
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
        (tmp / "charon.log").write_text(charon.log_text())    # charon's directory goes when it stops
