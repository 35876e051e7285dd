"""``--json`` of the verbs that print state: one JSON document each, carrying the facts of the text output,
with the same exit codes; an error under --json is a JSON object on stdout too.  The verbs on a running
daemon talk to a real ControlServer (control/ctl.py) on a temporary socket whose handlers answer as the
daemon's would."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control.cli import main
from control.ctl import CommandError, ControlServer

POLICIES = [{"index": 0, "connection": "peer", "child": "net", "src": "10.1.0.0/24", "dst": "10.2.0.0/24",
             "proto": 6, "sport": [0, 65535], "dport": [443, 443], "action": "protect", "priority": 3,
             "state": "installed", "sa_slots": [4]}]
RELOAD = {"added": ["new"], "removed": [], "changed": ["peer"], "unchanged": ["other"], "restart_needed": [],
          "routes": {"added": [], "removed": []}, "summary": "1 added, 0 removed, 1 changed, 1 unchanged"}
CHILD = {"name": "net", "state": "INSTALLED", "mode": "tunnel", "encap": True, "proposal": "AES_GCM_16_128",
         "spi_in": "c1a2b3c4", "spi_out": "d1e2f3a4", "slot_in": 0, "slot_out": 1, "installed": 65.0,
         "rekey_in": 3000.0, "expire_in": 3500.0, "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"],
         "counters": {"in": {"packets": 12, "bytes": 3400, "drops": {"replay": 2}},
                      "out": {"packets": 10, "bytes": 3000, "drops": {}}}}
SAS = [{"name": "peer", "unique": 3, "state": "ESTABLISHED", "initiator": True, "spi_i": "0123456789abcdef",
        "spi_r": "fedcba9876543210", "local": {"id": "gw-a.example", "addr": "192.0.2.1", "port": 4500},
        "remote": {"id": "gw-b.example", "addr": "192.0.2.2", "port": 4500}, "proposal": "AES_GCM_16_128/X25519",
        "nat": {"local": False, "remote": True}, "established": 70.0, "rekey_in": 14000.0, "children": [CHILD]}]
STATUS = {"mode": "gateway", "config": "/etc/ipsecgw/gw.yaml", "ike_sas": 1, "child_sas": 1, "policies": 2,
          "connections": ["peer"], "totals": {"in": CHILD["counters"]["in"], "out": CHILD["counters"]["out"]}}
TABLES = {"ikev2_decryption_table": "aa,bb,cc\n", "esp_sa": '"IPv4","192.0.2.1"\n', "ah_sa": ""}


def _refuse(args: dict[str, Any], uid: int) -> str:
    raise CommandError(f"no connection or child named {args.get('name')!r} (connections: peer)")


HANDLERS = {
    "list-sas": lambda args, uid: SAS,
    "status": lambda args, uid: STATUS,
    "initiate": lambda args, uid: f"initiating {args['name']}",
    "terminate": _refuse,
    "rekey": lambda args, uid: f"rekeying 1 IKE SA(s) of {args['name']}",
    "list-policies": lambda args, uid: POLICIES,
    "reload": lambda args, uid: RELOAD,
    "export-keys": lambda args, uid: TABLES,
}


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "ctl.sock")
    loop = asyncio.new_event_loop()
    server = ControlServer(path, HANDLERS)
    loop.run_until_complete(server.start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_initiate_terminate_rekey(capsys, sock: str) -> None:
    for verb, expected in (("initiate", "initiating peer"), ("rekey", "rekeying 1 IKE SA(s) of peer")):
        rc, text, _ = _run(capsys, verb, "peer", "--socket", sock)
        jrc, js, _ = _run(capsys, verb, "peer", "--socket", sock, "--json")
        assert (rc, jrc, text) == (0, 0, expected + "\n")
        assert json.loads(js) == {"command": verb, "name": "peer", "ok": True, "result": expected}
    rc, text, err = _run(capsys, "terminate", "nope", "--socket", sock)
    jrc, js, jerr = _run(capsys, "terminate", "nope", "--socket", sock, "--json")
    assert rc == jrc == 1 and text == "" and err == jerr
    assert json.loads(js) == {"command": "terminate", "ok": False,
                              "error": "no connection or child named 'nope' (connections: peer)"}
    assert err == f"ipsecgw terminate: {json.loads(js)['error']}\n"


def test_no_daemon_is_a_json_error_with_the_same_exit_code(capsys, tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.sock")
    for argv in (("status",), ("list-sas",), ("initiate", "peer")):
        rc, _, err = _run(capsys, *argv, "--socket", absent)
        jrc, js, _ = _run(capsys, *argv, "--socket", absent, "--json")
        doc = json.loads(js)
        assert rc == jrc == 1 and doc["ok"] is False and doc["error"] in err and "no control socket" in doc["error"]


def test_list_sas_and_status(capsys, sock: str) -> None:
    rc, text, _ = _run(capsys, "list-sas", "--socket", sock)
    jrc, js, _ = _run(capsys, "list-sas", "--socket", sock, "--json")
    assert rc == jrc == 0 and json.loads(js) == SAS
    ike, child = SAS[0], SAS[0]["children"][0]
    assert f"peer: #3, ESTABLISHED, IKEv2, {ike['spi_i']}_i {ike['spi_r']}_r, initiator" in text
    assert "remote 'gw-b.example' @ 192.0.2.2[4500]" in text and "NAT-T (remote behind NAT)" in text
    assert f"in  0x{child['spi_in']} (slot 0), out 0x{child['spi_out']} (slot 1)" in text
    assert "in   12 packets, 3.4 kB (dropped: replay 2)" in text
    rc, text, _ = _run(capsys, "status", "--socket", sock)
    jrc, js, _ = _run(capsys, "status", "--socket", sock, "--json")
    assert rc == jrc == 0 and json.loads(js) == STATUS
    assert "SAs: 1 IKE, 1 CHILD; 2 policies; connections: peer" in text
    assert "traffic out: 10 packets, 3.0 kB" in text


def test_list_policies_and_reload(capsys, sock: str) -> None:
    rc, text, _ = _run(capsys, "list-policies", "--socket", sock)
    jrc, js, _ = _run(capsys, "list-policies", "--socket", sock, "--json")
    assert rc == jrc == 0 and json.loads(js) == POLICIES
    assert "peer/net" in text and "10.1.0.0/24[6] -> 10.2.0.0/24[6/443]" in text and "PROTECT prio 3" in text
    rc, text, _ = _run(capsys, "reload", "--socket", sock)
    jrc, js, _ = _run(capsys, "reload", "--socket", sock, "--json")
    assert rc == jrc == 0 and json.loads(js) == RELOAD
    assert text == f"reloaded: {RELOAD['summary']}\n  added: new\n  changed: peer\n  unchanged: other\n"


def test_export_keys(capsys, sock: str, tmp_path: Path) -> None:
    rc, text, _ = _run(capsys, "export-keys", "--socket", sock)
    jrc, js, _ = _run(capsys, "export-keys", "--socket", sock, "--json")
    if os.geteuid() != 0:
        assert rc == jrc == 1 and json.loads(js) == {"command": "export-keys", "ok": False, "error": "root only"}
        return
    assert rc == jrc == 0 and json.loads(js) == TABLES
    assert text == "".join(f"# {name}\n{body}" for name, body in TABLES.items())
    rc, js, _ = _run(capsys, "export-keys", "--socket", sock, "--dir", str(tmp_path / "k"), "--json")
    written = json.loads(js)["wrote"]
    assert rc == 0 and [Path(p).read_text() for p in written] == list(TABLES.values())


def test_check(capsys, tmp_path: Path) -> None:
    good = tmp_path / "gw.yaml"
    good.write_text("""connections:
  peer:
    remote_addrs: [192.0.2.2]
    local: {id: gw-a.example}
    children:
      net: {local_ts: [10.1.0.0/24], remote_ts: [10.2.0.0/24], esp_proposals: [aes256gcm16], mode: transport}
      auth: {local_ts: [10.1.0.0/24], remote_ts: [10.3.0.0/24], ah_proposals: [sha256]}
secrets:
  ike-1: {secret: abc}
""")
    rc, text, _ = _run(capsys, "check", "-c", str(good))
    jrc, js, _ = _run(capsys, "check", "-c", str(good), "--json")
    doc = json.loads(js)
    assert rc == jrc == 0 and doc["ok"] and doc["errors"] == [] and doc["file"] == str(good)
    assert text.splitlines()[0] == f"{good}: OK (1 connection(s), 2 child(ren))"
    assert doc["connections"] == [{"name": "peer", "children": [
        {"name": "net", "protocol": "esp", "mode": "transport", "proposals": ["aes256gcm16"]},
        {"name": "auth", "protocol": "ah", "mode": "tunnel", "proposals": ["sha256"]}]}]
    for c in doc["connections"][0]["children"]:
        assert f"  peer/{c['name']}: {c['protocol'].upper()} {c['mode']}, {', '.join(c['proposals'])}" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("connections:\n  peer:\n    remote_addrs: [gw.example]\n    children: {}\n")
    rc, _, err = _run(capsys, "check", "-c", str(bad))
    jrc, js, _ = _run(capsys, "check", "-c", str(bad), "--json")
    doc = json.loads(js)
    assert rc == jrc == 2 and not doc["ok"]
    assert [e["text"] for e in doc["errors"]] == err.splitlines()
    first = doc["errors"][0]
    assert first == {"text": err.splitlines()[0], "file": str(bad), "line": 3,
                     "field": "connections.peer.remote_addrs[0]",
                     "expected": "an IP address or %any (host names are not resolved)", "got": "'gw.example'"}
    rc, js, _ = _run(capsys, "check", "-c", str(tmp_path / "absent.yaml"), "--json")
    assert rc == 2 and json.loads(js)["errors"] == [
        {"text": f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory", "file":
         str(tmp_path / "absent.yaml"), "line": None, "field": None, "expected": None, "got": None}]
    bad.write_text("connections: [\n")
    rc, js, _ = _run(capsys, "check", "-c", str(bad), "--json")
    (err,) = json.loads(js)["errors"]
    assert rc == 2 and err["line"] == 2 and "not valid YAML" in err["text"] and err["field"] is None


def test_caps(capsys) -> None:
    rc, text, _ = _run(capsys, "caps", "--no-dpdk")
    jrc, js, _ = _run(capsys, "caps", "--no-dpdk", "--json")
    doc = json.loads(js)
    assert rc == jrc == 0 and doc["engines"]
    for e in doc["engines"]:
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [e["name"]])
        assert (line.split()[1] == "present") == e["present"], line
        assert e["detail"] in line
