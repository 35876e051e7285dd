"""Reauthentication and the IKE hard lifetime through two real ``ipsecgw run --control-only``
daemons in network namespaces: A reauthenticates every few seconds (make before break), and
both regions must end up holding exactly the new CHILD SA, with new IKE SPIs in ``list-sas``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.daemon_harness import DaemonProc, installed_child, pair_config, region_sas
from support.strongswan import NetnsPair

from cdefs.sa import Direction

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _spis(shm: Path) -> set[tuple[int, Direction]]:
    return {(sa.spi, d) for sa, d in region_sas(shm).values()}


def test_daemon_reauthenticates_make_before_break(tmp_path: Path) -> None:
    tag = f"ra{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        a = pair_config(tmp_path, "a", local=net.a_ip, remote=net.b_ip, lid="gw-a.example", rid="gw-b.example",
                        lts="10.1.0.0/16", rts="10.2.0.0/16", start="start",
                        conn_extra="    reauth_time: 4s\n    over_time: 20s\n    rand_time: 0\n")
        b = pair_config(tmp_path, "b", local=net.b_ip, remote=net.a_ip, lid="gw-b.example", rid="gw-a.example",
                        lts="10.2.0.0/16", rts="10.1.0.0/16", start="none")
        db = DaemonProc(*b, netns=net.b)
        try:
            da = DaemonProc(*a, netns=net.a)
            try:
                sas = da.wait_for(lambda s: installed_child(s) and s)
                first = next(s for s in sas if s["state"] == "ESTABLISHED")
                child0 = installed_child(sas)

                def replaced(s):
                    ups = [x for x in s if x["state"] == "ESTABLISHED"]
                    c = installed_child(s)
                    return len(ups) == 1 and ups[0]["spi_i"] != first["spi_i"] and c and \
                        c["spi_in"] != child0["spi_in"] and len(s) == 1 and s
                da.wait_for(replaced, 20)
                # both ends agree on one IKE SA and one CHILD SA, and the regions hold just that pair (the
                # old pairs were removed, keys zeroed); A reauthenticates again every few seconds, so
                # look until a snapshot falls between two reauthentications
                deadline = time.monotonic() + 20
                while True:
                    sa_a, sa_b = da.call("list-sas"), db.call("list-sas")
                    c_a, c_b = installed_child(sa_a), installed_child(sa_b)
                    regions = _spis(a[2]), _spis(b[2])
                    if len(sa_a) == len(sa_b) == 1 and sa_a[0]["spi_i"] == sa_b[0]["spi_i"] and c_a and c_b \
                            and (c_a["spi_in"], c_a["spi_out"]) == (c_b["spi_out"], c_b["spi_in"]) \
                            and regions == ({(int(c_a["spi_in"], 16), Direction.IN),
                                             (int(c_a["spi_out"], 16), Direction.OUT)},
                                            {(int(c_b["spi_in"], 16), Direction.IN),
                                             (int(c_b["spi_out"], 16), Direction.OUT)}):
                        break
                    assert time.monotonic() < deadline, (sa_a, sa_b, regions)
                    time.sleep(0.1)
                log = da.log_text()
                assert "reached its reauth time: reauthenticating" in log and "reauthenticated: it replaces" in log
            finally:
                da.stop()
        finally:
            db.stop()
