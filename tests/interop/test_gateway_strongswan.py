"""``ipsecgw run`` against strongSwan 5.9.8 (charon-systemd with kernel-libipsec) as the other gateway:
host A - our gw A === charon in gw B - host B.  kernel-libipsec forces ESP in UDP on 4500, so this is the
NAT-T path of our fastpath (ESP-in-UDP sockets, IKE steered to control on the shared port).

Shown: the first ping from host A raises the ACQUIRE and is answered; pings and a TCP stream with a
SHA-256 check in both directions; a CHILD SA rekey we start, and one charon starts, under a ping stream
loses no ping; charon lists the same SPIs as ours.
"""

from __future__ import annotations

import re
from pathlib import Path

from support.gateway_harness import (
    acquire_lines,
    charon_gateway_b,
    first_ping,
    gateway_a_with_charon,
    ping_through_rekey,
)
from support.netns_tools import PSK, Topology, gateway_config
from support.strongswan import interop_marks

pytestmark = interop_marks()


def test_ipsecgw_run_with_strongswan(tmp_path: Path) -> None:
    with Topology(f"sw{id(tmp_path) % 10000}") as t:
        cfg, sock, _ = gateway_config(tmp_path, "A", encap=False)
        charon = charon_gateway_b(t)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            first_ping(t, gw, charon)
            assert acquire_lines(gw.text())
            c = gw.wait_child()
            assert c["encap"], "kernel-libipsec forces UDP encapsulation"
            listing = charon.list_sas()
            assert c["spi_in"] in listing and c["spi_out"] in listing, listing
            assert "INSTALLED, TUNNEL-in-UDP" in listing

            res = t.ping(50, 0.02, size=1000)
            assert len(res["got"]) == 50
            t.tcp(5401, 2 << 20)

            # our CHILD SA rekey (CREATE_CHILD_SA over IKE on 4500, shared with the fastpath) under pings
            new = ping_through_rekey(t, gw, c)
            charon.wait_listed(new["spi_in"])
            # charon's rekey, ours answering: our new inbound SA is in place before the response leaves, and we
            # keep sending on the old pair until charon's Delete of it (docs/daemon.md)
            newer = ping_through_rekey(t, gw, new, rekey=lambda: charon.swanctl("--rekey", "--child", "net"))
            charon.wait_listed(newer["spi_in"])
            text = gw.text()
            assert "sending on it once the peer deletes the SA it replaces" in text, text[-3000:]
            assert "did not delete the SA it rekeyed" not in text
            t.tcp(5402, 1 << 20)
            ctr = gw.child()["counters"]
            assert ctr["in"]["packets"] > 0 and ctr["out"]["packets"] > 0
            assert re.search(r"in\s+\d+ packets", gw.cli("list-sas"))
    assert "control stopped (exit code 0)" in gw.text()
    assert PSK not in gw.text()
