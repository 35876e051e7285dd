"""Our daemon (``ipsecgw run --control-only``) against a live strongSwan 5.9.8 in network namespaces.

Ours initiates from its config (start_action=start), then charon initiates to
ours; each time the CHILD SA SPIs that ``swanctl --list-sas`` shows are the ones
in our shared-memory region, in the right direction.  ``ipsecgw terminate``
reaches charon as an INFORMATIONAL Delete.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, gateway_yaml, installed_child, region_sas
from support.strongswan import Charon, NetnsPair, interop_marks, swanctl_conf

from cdefs.sa import Direction

pytestmark = interop_marks()

PSK = "daemon-interop-psk-0123456789"
OUR_TS, THEIR_TS = "10.1.0.0/16", "10.2.0.0/16"


def _charon_spis(listing: str) -> tuple[int, int] | None:
    m_in = re.search(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)
    m_out = re.search(r"^\s+out\s+([0-9a-f]{8}),", listing, re.M)
    if not (m_in and m_out):
        return None
    return int(m_in.group(1), 16), int(m_out.group(1), 16)


def _wait(fn, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _check_shm(ours: dict, shm: Path, charon_in: int, charon_out: int) -> None:
    sas = region_sas(shm)
    sa_out, d_out = sas[ours["slot_out"]]
    sa_in, d_in = sas[ours["slot_in"]]
    assert (d_out, d_in) == (Direction.OUT, Direction.IN)
    assert sa_out.spi == charon_in and sa_in.spi == charon_out
    assert sa_out.udp_encap and sa_in.udp_encap          # charon's kernel-libipsec forces NAT-T
    assert str(sa_out.src) == "192.0.2.1" and str(sa_out.dst) == "192.0.2.2"


@pytest.mark.parametrize("ike,esp", [("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
                                     ("aes128-sha256-x25519", "aes128-sha256")])
def test_daemon_with_charon_both_directions(tmp_path: Path, ike: str, esp: str) -> None:
    tag = f"dmS{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        net.add_lo_address(net.b, "10.2.0.1/32")       # charon wants an address inside its local_ts
        charon = Charon(net.b, swanctl_conf(local=net.b_ip, remote=net.a_ip, local_id="gw-b.example",
                                            remote_id="gw-a.example", psk=PSK, ike=ike, esp=esp,
                                            local_ts=THEIR_TS, remote_ts=OUR_TS))
        shm, sock, cfg = tmp_path / "gw.shm", tmp_path / "gw.sock", tmp_path / "gw.yaml"
        cfg.write_text(gateway_yaml(shm=shm, sock=sock, ike_port=500, natt_port=4500, local=net.a_ip,
                                    remote=net.b_ip, remote_port=500, remote_natt_port=4500,
                                    local_id="gw-a.example", remote_id="gw-b.example", local_ts=OUR_TS,
                                    remote_ts=THEIR_TS, start_action="start", psk=PSK, ike=ike, esp=esp))
        daemon = None
        try:
            charon.start()
            daemon = DaemonProc(cfg, sock, shm, netns=net.a)
            # 1. ours initiates at start-up
            ours = daemon.wait_for(installed_child, timeout=20)
            _wait(lambda: "INSTALLED" in charon.list_sas())
            listing = charon.list_sas()
            spis = _charon_spis(listing)
            assert spis is not None, f"{listing}\n{charon.log_text()}"
            assert f"{spis[0]:08x}" == ours["spi_out"] and f"{spis[1]:08x}" == ours["spi_in"]
            ike_sa = next(i for i in daemon.call("list-sas") if i["state"] == "ESTABLISHED")
            assert ike_sa["spi_i"] in listing and ike_sa["spi_r"] in listing
            assert ike_sa["nat"]["remote"]
            _check_shm(ours, shm, *spis)

            # 2. our terminate reaches charon as a Delete
            daemon.call("terminate", name="peer")
            gone = _wait(lambda: "ESTABLISHED" not in charon.list_sas(), timeout=10)
            assert gone, charon.list_sas()
            assert region_sas(shm) == {}

            # 3. charon initiates; ours responds from the same config
            charon.swanctl("--initiate", "--child", "net", timeout=30)
            ours = daemon.wait_for(installed_child, timeout=20)
            listing = charon.list_sas()
            spis = _charon_spis(listing)
            assert spis is not None, listing
            assert f"{spis[0]:08x}" == ours["spi_out"] and f"{spis[1]:08x}" == ours["spi_in"]
            ike_sa = next(i for i in daemon.call("list-sas") if i["state"] == "ESTABLISHED")
            assert not ike_sa["initiator"]
            _check_shm(ours, shm, *spis)
        finally:
            log = daemon.log_text() if daemon else ""
            if daemon is not None:
                assert daemon.stop() == 0, log
            charon.stop()
    assert "established with 192.0.2.2 (gw-b.example)" in log
    assert PSK not in log
