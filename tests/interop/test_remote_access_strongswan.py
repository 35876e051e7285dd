"""Road warriors: three strongSwan 5.9.8 clients (``vips = 0.0.0.0``, PSK) against ``ipsecgw run`` with a
two-address pool (docs/remote-access.md).

Shown: each of the first two gets a distinct address of the pool and the DNS server in its CFG_REPLY, and
pings the LAN host behind the gateway from it; ``list-sas --json`` shows the vips and ``list-pools`` the
leases; the third is refused with INTERNAL_ADDRESS_FAILURE and holds no lease; the second client's IKE
and CHILD SA rekeys keep its lease and its traffic; a client that disconnects is shown offline and gets
the same address when it connects again.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from support.gateway_harness import GatewayProc
from support.roadwarrior import RW_PSK, RoadWarriors, client_id, gateway_yaml
from support.strongswan import Charon, interop_marks

pytestmark = interop_marks()

POOL = ("10.99.0.1", "10.99.0.2")


def _vip(charon: Charon) -> str:
    # swanctl --list-sas: "  local  'rw1@example.org' @ 192.0.2.11[4500] [10.99.0.1]"
    m = re.search(r"^\s+local\s+'[^']*' @ \S+ \[([0-9.]+)\]", charon.list_sas(), re.M)
    assert m, charon.list_sas()
    return m.group(1)


def _leases(gw: GatewayProc) -> dict[str, dict]:
    (pool,) = gw.json("list-pools")
    assert pool["name"] == "rw" and pool["size"] == 2
    return {x["identity"]: x for x in pool["leases"]}


def _wait(pred, what: str, gw: GatewayProc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{gw.text()[-4000:]}")
        time.sleep(0.2)


def _ping_ok(net: RoadWarriors, gw: GatewayProc, charon: Charon, i: int, vip: str) -> None:
    r = net.ping_from(i, vip)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, \
        r.stdout + r.stderr + gw.cli("status") + gw.cli("list-sas") + charon.list_sas() + charon.log_text()[-3000:]


def test_road_warriors_get_distinct_pool_addresses(tmp_path: Path) -> None:
    cfg, sock = gateway_yaml(tmp_path, f"{POOL[0]}-{POOL[1]}")
    with RoadWarriors(str(os.getpid() % 100000), 3) as net, ExitStack() as stack:
        charons = [stack.enter_context(net.charon(i)) for i in (1, 2, 3)]
        gw = GatewayProc(net.gw, cfg, sock, tmp_path / "gw.log")
        stopped: list[int] = []
        stack.callback(lambda: stopped.append(gw.stop()))

        vips = {}
        for i in (1, 2):
            charons[i - 1].swanctl("--initiate", "--child", "net", timeout=30)
            vips[i] = _vip(charons[i - 1])
            # CFG_REPLY with the address and the pool's DNS server, as charon parsed it
            assert re.search(r"parsed IKE_AUTH response 1 \[[^\]]*CPRP\([^)]*ADDR[^)]*DNS", charons[i - 1].log_text())
        assert set(vips.values()) == set(POOL), vips
        for i in (1, 2):
            _ping_ok(net, gw, charons[i - 1], i, vips[i])

        by_id = {ike["remote"]["id"]: ike for ike in gw.json("list-sas") if ike.get("name") == "rw"}
        assert {k: v["vips"] for k, v in by_id.items()} == {client_id(i): [vips[i]] for i in (1, 2)}
        for i in (1, 2):
            (child,) = by_id[client_id(i)]["children"]
            assert child["remote_ts"] == [f"{vips[i]}/32"] and child["local_ts"] == ["10.1.0.0/24"]
        leases = _leases(gw)
        assert {k: (v["address"], v["online"]) for k, v in leases.items()} == \
            {client_id(i): (vips[i], True) for i in (1, 2)}
        assert "virtual IP(s)" in gw.cli("list-sas") and "size 2  used 2" in gw.cli("list-pools")

        # the pool is exhausted: the third client is refused, and no lease is left for it
        with pytest.raises(RuntimeError):
            charons[2].swanctl("--initiate", "--child", "net", timeout=30)
        assert "INTERNAL_ADDRESS_FAILURE" in charons[2].log_text(), charons[2].log_text()[-3000:]
        assert set(_leases(gw)) == {client_id(1), client_id(2)}
        assert "no free address in pool(s) rw" in gw.text()

        # client 2 rekeys its IKE SA (new SPIs: the lease moves with it) and its CHILD SA
        old_spi = by_id[client_id(2)]["spi_i"]
        charons[1].swanctl("--rekey", "--ike", "peer", timeout=30)
        _wait(lambda: any(ike.get("remote", {}).get("id") == client_id(2) and ike["spi_i"] != old_spi
                          and ike["state"] == "ESTABLISHED" for ike in gw.json("list-sas")), "rw2's IKE rekey", gw)
        charons[1].swanctl("--rekey", "--child", "net", timeout=30)
        time.sleep(1.0)
        assert _leases(gw)[client_id(2)] == {"address": vips[2], "identity": client_id(2), "online": True}
        (ike2,) = [ike for ike in gw.json("list-sas") if ike.get("remote", {}).get("id") == client_id(2)]
        assert ike2["vips"] == [vips[2]] and ike2["spi_i"] != old_spi
        _ping_ok(net, gw, charons[1], 2, vips[2])

        # disconnect: the lease stays, offline; reconnect: the same address, and traffic again
        charons[0].swanctl("--terminate", "--ike", "peer", timeout=30)
        _wait(lambda: not _leases(gw)[client_id(1)]["online"], "rw1's lease offline", gw)
        charons[0].swanctl("--initiate", "--child", "net", timeout=30)
        assert _vip(charons[0]) == vips[1]
        _ping_ok(net, gw, charons[0], 1, vips[1])
        assert _leases(gw)[client_id(1)]["online"]
        assert all(ipaddress.ip_address(v) in ipaddress.ip_network("10.99.0.0/30") for v in vips.values())
    assert stopped == [0], gw.text()[-3000:]
    assert RW_PSK not in gw.text()
