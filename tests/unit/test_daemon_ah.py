"""What control does with a negotiated AH CHILD SA: two real ``Daemon`` objects (real IKE core, real
shared-memory regions, datagrams handed over in process) bring up a child configured with
``ah_proposals``; each region then holds the pair with proto=ah, AH's algorithm and crossed keys, the
policy points at it, and the IKE SA is up.  (Whether a fastpath engine then runs it is
test_region_sync_ah.py's business.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from support.daemon_harness import gateway_yaml, region_sas

from cdefs.sa import Direction
from control.config import load_config
from control.daemon import Daemon
from control.ike.events import Datagram
from control.wireshark_keys import wireshark_tables

A_IP, B_IP = "198.51.100.1", "198.51.100.2"
A_NET, B_NET = "10.1.0.0/16", "10.2.0.0/16"


class InProcess(Daemon):
    """A daemon without sockets or an event loop: its datagrams go onto a shared list."""

    def __init__(self, path: Path, wire: list):
        super().__init__(load_config(path))
        self.wire = wire
        self._open_region()

    def _now(self) -> float:
        return 1000.0

    def send(self, local_ip: str, d: Datagram) -> None:
        self.wire.append((self, local_ip, d))


@pytest.fixture
def pair(tmp_path: Path):
    wire: list = []
    daemons = []
    for name, local, remote, lts, rts in (("a", A_IP, B_IP, A_NET, B_NET), ("b", B_IP, A_IP, B_NET, A_NET)):
        cfg = tmp_path / f"{name}.yaml"
        text = gateway_yaml(shm=tmp_path / f"{name}.shm", sock=tmp_path / f"{name}.sock", ike_port=500,
                            natt_port=4500, local=local, remote=remote, remote_port=500, remote_natt_port=4500,
                            local_id=f"gw-{name}.example", remote_id=f"gw-{'b' if name == 'a' else 'a'}.example",
                            local_ts=lts, remote_ts=rts, start_action="none", export_keys=False)
        cfg.write_text(text.replace("esp_proposals: [aes128gcm16]", "ah_proposals: [aes256gmac-esn, sha384]"))
        daemons.append(InProcess(cfg, wire))
    yield daemons[0], daemons[1], wire
    for d in daemons:
        assert d.region is not None
        d.region.close()


def test_an_ah_child_lands_in_both_regions_as_ah(pair, tmp_path: Path) -> None:
    a, b, wire = pair
    conn = a.config.connections["peer"]
    a.initiate(conn, conn.children[0])
    while wire:
        sender, local_ip, d = wire.pop(0)
        (b if sender is a else a).intake.received(d.data, d.remote[0], d.remote[1], (local_ip, d.local_port))
    assert len(a.children) == len(b.children) == 1
    ca, cb = a.children[0], b.children[0]
    assert ca.proposal == cb.proposal == "AH/aes-gmac-256/ESN" and not ca.encap
    sas = {}
    for name in ("a", "b"):
        sas[name] = {d: sa for sa, d in region_sas(tmp_path / f"{name}.shm").values()}
        for sa in sas[name].values():
            assert sa.proto == "ah" and sa.enc == "null" and sa.integ == "aes-gmac-256" and sa.esn
            assert len(sa.integ_key) == 36 and not sa.udp_encap
    assert sas["a"][Direction.OUT].spi == sas["b"][Direction.IN].spi == ca.spi_out
    assert sas["a"][Direction.OUT].integ_key == sas["b"][Direction.IN].integ_key
    assert sas["b"][Direction.OUT].integ_key == sas["a"][Direction.IN].integ_key
    assert sas["a"][Direction.OUT].integ_key != sas["a"][Direction.IN].integ_key
    # export-keys: Wireshark's esp_sa table is ESP's, so the AH pair goes to ah_sa, with the installed keys
    table = wireshark_tables([], [SimpleNamespace(name="net", keys=(sas["a"][Direction.IN], sas["a"][Direction.OUT]))])
    assert table["esp_sa"] == ""
    for sa in sas["a"].values():
        assert f'"0x{sa.spi:08x}","aes-gmac-256","0x{sa.integ_key.hex()}"' in table["ah_sa"]
