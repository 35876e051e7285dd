"""No key material in any log line, and the JSON log is one object a line carrying the SA it concerns.

hostA - gwA === gwB - hostB in network namespaces, both ``ipsecgw run`` at log_level debug with
``export_keys: yes``; gateway A logs JSON (``gateway.log_format: json``), gateway B text.  A ping brings the
CHILD SA up, then it is rekeyed and its IKE SA too.  ``ipsecgw export-keys`` on both sides, before and after
the rekeys, gives every IKE (SK_e*, SK_a*) and ESP key; the pre-shared key is searched for too.  Every log
line of the three processes of both gateways (start to clean stop) is searched for each of them as lower- and
upper-case hex, base64 and urlsafe base64 of the raw bytes, Python's bytes repr, and the raw bytes.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from support.gateway_harness import GatewayProc
from support.netns_tools import PSK, Topology, gateway_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

TAG = f"lk{os.getpid() % 10000}"


def _keys(export: str) -> set[bytes]:
    """The keys in export-keys' text: ikev2_decryption_table's SK_ei, SK_er, SK_ai, SK_ar and esp_sa's
    encryption and integrity keys (wireshark_keys.py's columns); SPIs and addresses are not secret."""
    keys: set[bytes] = set()
    for line in export.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if line.startswith("#") or len(cols) < 7:
            continue
        if cols[0].startswith("IPv"):                  # esp_sa: family, src, dst, spi, enc, key, integ, key
            picked = [cols[5]] + ([cols[7]] if len(cols) > 7 else [])
        else:                                           # ikev2: spi_i, spi_r, sk_ei, sk_er, enc, sk_ai, sk_ar, integ
            picked = [cols[2], cols[3], cols[5], cols[6]]
        for k in picked:
            k = k.removeprefix("0x")
            if k:
                keys.add(bytes.fromhex(k))
    return keys


def _forms(key: bytes) -> list[bytes]:
    hx = key.hex()
    return [hx.encode(), hx.upper().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key),
            repr(key)[2:-1].encode(), key, hx[: len(hx) // 2].encode()]   # half a key is a leak too


def _leaks(logs: dict[str, bytes], secrets: set[bytes]) -> list[str]:
    found = []
    for name, data in logs.items():
        low = data.lower()
        for key in secrets:
            for form in _forms(key):
                if len(form) >= 8 and (form in data or form.lower() in low):
                    found.append(f"{name}: {key.hex()[:8]}... as {form[:12]!r}")
    return found


def _with_keys_and_json(cfg: Path, json_log: bool) -> None:
    text = cfg.read_text().replace("gateway:\n", "gateway:\n  export_keys: yes\n"
                                   + ("  log_format: json\n" if json_log else ""), 1)
    assert "log_level: debug" in text
    cfg.write_text(text)


def _ike_spis(gw: GatewayProc) -> set[str]:
    return {ike["spi_i"] for ike in gw.json("list-sas") if ike.get("state") == "ESTABLISHED"}


def _wait(cond, what: str, gw: GatewayProc, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s:\n{gw.text()[-3000:]}")


def test_no_key_in_any_log_and_json_lines(tmp_path: Path) -> None:
    cfg_a, sock_a, _ = gateway_config(tmp_path, "A", encap=False)
    cfg_b, sock_b, _ = gateway_config(tmp_path, "B", encap=False)
    _with_keys_and_json(cfg_a, True)
    _with_keys_and_json(cfg_b, False)
    log_a, log_b = tmp_path / "gwA.log", tmp_path / "gwB.log"
    exports: list[str] = []
    with Topology(TAG) as topo:
        a = GatewayProc(topo.gA, cfg_a, sock_a, log_a)
        b = GatewayProc(topo.gB, cfg_b, sock_b, log_b)
        try:
            topo.ping(3, 0.2)
            first = a.wait_child()
            b.wait_child()
            exports += [a.cli("export-keys"), b.cli("export-keys")]
            ike_before = _ike_spis(a)
            a.cli("rekey", "net")
            second = a.wait_child(other_than=first["spi_in"])
            a.cli("rekey", "peer")
            _wait(lambda: _ike_spis(a) and not _ike_spis(a) & ike_before, "the IKE SA rekeyed", a)
            assert len(topo.ping(5, 0.05)["got"]) == 5, a.text()[-3000:]    # traffic on the rekeyed SAs
            exports += [a.cli("export-keys"), b.cli("export-keys")]
        finally:
            assert a.stop() == 0 and b.stop() == 0
    keys = set().union(*(_keys(e) for e in exports))
    # two ESP SAs per CHILD SA, two generations; four IKE keys (GCM: two), two generations
    assert len(keys) >= 6, exports
    secrets = keys | {PSK.encode()}
    logs = {"gwA.log": log_a.read_bytes(), "gwB.log": log_b.read_bytes()}
    assert b" DEBUG " in logs["gwB.log"] and b"\"level\": \"debug\"" in logs["gwA.log"]
    # the search finds what it looks for: a key appended to a copy of the log is reported
    probe = next(iter(keys))
    assert _leaks({"probe": logs["gwA.log"] + base64.b64encode(probe)}, {probe})
    assert _leaks(logs, secrets) == []

    # gateway A: every line of all three processes is one JSON object
    objs = [json.loads(line) for line in log_a.read_text().splitlines()]
    assert {"ts", "level", "logger", "event"} <= set(objs[0])
    loggers = {o["logger"] for o in objs}
    assert {"ipsecgw.supervisor", "ipsecgw.daemon", "ipsecgw.fastpath"} <= loggers, loggers
    assert any(o["level"] == "debug" for o in objs)
    for spi in (first["spi_in"], second["spi_in"]):
        up = [o for o in objs if o["logger"] == "ipsecgw.daemon" and "installed" in o["event"]
              and o.get("spi") == f"0x{spi}"]
        assert len(up) == 1, [o for o in objs if "installed" in o["event"]]
        assert up[0]["child"] == "net" and up[0]["ike_sa"].startswith("peer[") and up[0]["conn"] == "peer"
        assert up[0]["peer"] == "192.0.2.2" and up[0]["spi_out"].startswith("0x")
    # the fastpath's line about the same inbound SA carries its SPI and direction
    fp = [o for o in objs if o["logger"] == "ipsecgw.fastpath" and o.get("spi") == f"0x{first['spi_in']}"]
    assert fp and fp[0]["dir"] == "in" and isinstance(fp[0]["slot"], int), fp
    acq = [o for o in objs if o["event"].startswith("ACQUIRE for peer/net")]
    assert acq and acq[0]["conn"] == "peer" and acq[0]["child"] == "net", acq
    est = [o for o in objs if " established with " in o["event"]]
    assert est and all(o["ike_sa"].startswith("peer[") and o["peer"] == "192.0.2.2" for o in est)
    # gateway B's text lines carry no JSON, and read as they did
    text_b = log_b.read_text()
    assert not text_b.lstrip().startswith("{") and " installed: " in text_b
