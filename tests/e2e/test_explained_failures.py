"""Negotiation failures provoked on purpose between two of our daemons (loopback, distinct addresses and
ports), and what each side says about them.

The responder's log must explain the failure with both sides (proposal lists and the difference, TS sets
and their intersection, expected vs presented identity); ``ipsecgw initiate`` on the initiator must exit 1
with the notify and the peer on its first line and what it offered after; a working pair exits 0; a peer
that never answers ends in "timeout" while the daemon keeps answering other commands.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.daemon_harness import ROOT, DaemonProc, gateway_yaml

A_IP, B_IP = "127.0.0.1", "127.0.0.2"
A_TS, B_TS = "10.1.0.0/16", "10.2.0.0/16"
PSK = "daemon-test-psk-0123456789"


def _ports() -> tuple[int, int, int, int]:
    base = 20000 + (os.getpid() * 11 + random.randrange(1000)) % 30000
    return base, base + 1, base + 2, base + 3


class Pair:
    """A (initiator, start_action none) and B (responder); ``a``/``b`` override gateway_yaml's arguments."""

    def __init__(self, tmp: Path, a: dict | None = None, b: dict | None = None, *, start_b: bool = True):
        a_ike, a_natt, b_ike, b_natt = _ports()
        self.procs: list[DaemonProc] = []
        self.b = self._make(tmp, "b", dict(ike_port=b_ike, natt_port=b_natt, local=B_IP, remote=A_IP, remote_port=a_ike,
                                           remote_natt_port=a_natt, local_id="gw-b.example", remote_id="gw-a.example",
                                           local_ts=B_TS, remote_ts=A_TS, start_action="none") | (b or {}),
                            start_b)
        self.a = self._make(tmp, "a", dict(ike_port=a_ike, natt_port=a_natt, local=A_IP, remote=B_IP, remote_port=b_ike,
                                           remote_natt_port=b_natt, local_id="gw-a.example", remote_id="gw-b.example",
                                           local_ts=A_TS, remote_ts=B_TS, start_action="none") | (a or {}), True)

    def _make(self, tmp: Path, tag: str, kw: dict, start: bool) -> DaemonProc | None:
        shm, sock, cfg = tmp / f"{tag}.shm", tmp / f"{tag}.sock", tmp / f"{tag}.yaml"
        cfg.write_text(gateway_yaml(shm=shm, sock=sock, **kw))
        if not start:
            return None
        p = DaemonProc(cfg, sock, shm)
        self.procs.append(p)
        return p

    def initiate(self, *extra: str, name: str = "peer", timeout: float = 15) -> subprocess.CompletedProcess:
        """``ipsecgw initiate`` on A, as an operator runs it."""
        assert self.a is not None
        return subprocess.run([sys.executable, "-m", "control.cli", "initiate", name, "--socket", str(self.a.sock),
                               "--timeout", str(timeout), *extra], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout + 30)

    def b_log(self) -> str:
        assert self.b is not None
        return self.b.log_text()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def make_pair(tmp_path: Path):
    made: list[Pair] = []

    def make(**kw) -> Pair:
        p = Pair(tmp_path, **kw)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop()


def _first_line(out: subprocess.CompletedProcess) -> str:
    return out.stdout.splitlines()[0] if out.stdout else ""


def test_success_exits_zero(make_pair) -> None:
    pair = make_pair()
    out = pair.initiate()
    assert out.returncode == 0, out.stdout + out.stderr + pair.a.log_text()
    assert _first_line(out).startswith("peer: up, IKE SA peer[") and f"with {B_IP}" in _first_line(out)
    assert "CHILD SA net: in 0x" in out.stdout
    again = pair.initiate("--json")         # already up: answered at once, still an outcome
    assert again.returncode == 0 and json.loads(again.stdout)["ok"] is True


def test_ike_proposal_mismatch(make_pair) -> None:
    pair = make_pair(b={"ike": "aes256gcm16-prfsha384-ecp384"})
    out = pair.initiate()
    assert out.returncode == 1, out.stdout + out.stderr
    assert _first_line(out).startswith(f"peer: failed: NO_PROPOSAL_CHOSEN from {B_IP}")
    assert "we offered IKE proposals: aes128gcm16-prfsha256-x25519" in out.stdout
    log = pair.b_log()
    assert "failed: NO_PROPOSAL_CHOSEN sent to the peer" in log
    assert "our IKE proposals:   aes256gcm16-prfsha384-ecp384" in log
    assert "their IKE proposals: aes128gcm16-prfsha256-x25519" in log
    assert "differs: encryption: ours aes256gcm16, theirs aes128gcm16; PRF: ours prfsha384, theirs prfsha256; " \
           "DH group: ours ecp384, theirs x25519" in log
    assert "NO_PROPOSAL_CHOSEN from the peer" in pair.a.log_text()


def test_esp_proposal_mismatch(make_pair) -> None:
    pair = make_pair(b={"esp": "aes256-sha256"})
    out = pair.initiate("--json")
    assert out.returncode == 1
    res = json.loads(out.stdout)
    assert res["failure"] == "NO_PROPOSAL_CHOSEN" and res["received"] and res["peer"] == B_IP
    assert "we offered child net: ESP proposals aes128gcm16" in res["offered"]
    log = pair.b_log()
    assert "our ESP proposals:   aes256-sha256" in log and "their ESP proposals: aes128gcm16" in log
    assert "encryption: ours aes256, theirs aes128gcm16; integrity: ours sha256, theirs none" in log


def test_ts_unacceptable(make_pair) -> None:
    pair = make_pair(b={"remote_ts": "10.9.0.0/16"})
    out = pair.initiate()
    assert out.returncode == 1
    assert _first_line(out).startswith(f"peer: failed: TS_UNACCEPTABLE from {B_IP}")
    assert "TSi (our side) 10.1.0.0/16, TSr (their side) 10.2.0.0/16" in out.stdout
    log = pair.b_log()
    assert "their TSi (their side): 10.1.0.0/16" in log
    assert "child net: ours local 10.2.0.0/16, remote 10.9.0.0/16" in log
    assert "TSi with our remote: empty (the addresses do not overlap)" in log
    assert "TSr with our local:  10.2.0.0/16" in log


def test_wrong_identity(make_pair) -> None:
    pair = make_pair(a={"local_id": "gw-x.example"}, b={"remote_id": "gw-a.example"})
    out = pair.initiate()
    assert out.returncode == 1
    assert _first_line(out).startswith(f"peer: failed: AUTHENTICATION_FAILED from {B_IP}")
    assert "we presented identity FQDN gw-x.example, auth psk" in out.stdout
    log = pair.b_log()
    assert "check failed: identity mismatch" in log
    assert "presented identity: FQDN gw-x.example" in log and "expected identity:  FQDN gw-a.example" in log


def test_initiator_refusing_the_responder_explains_it(make_pair) -> None:
    # here A decides: the responder's identity is not the one A expects
    pair = make_pair(a={"remote_id": "gw-y.example"})
    out = pair.initiate()
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"peer: failed: AUTHENTICATION_FAILED with {B_IP}")
    assert lines[1:4] == ["  check failed: identity mismatch", "  presented identity: FQDN gw-b.example",
                          "  expected identity:  FQDN gw-y.example"]
    assert "  what we offered:" in lines


def test_wrong_psk_never_logged(make_pair) -> None:
    other = "another-psk-for-b-9876543210"
    pair = make_pair(b={"psk": other})
    out = pair.initiate()
    assert out.returncode == 1
    assert _first_line(out).startswith(f"peer: failed: AUTHENTICATION_FAILED from {B_IP}")
    log = pair.b_log()
    assert "check failed: PSK mismatch" in log
    for text in (log, pair.a.log_text(), out.stdout):
        assert PSK not in text and other not in text


def test_child_name_waits_for_that_child(make_pair) -> None:
    pair = make_pair(b={"esp": "aes256-sha256"})
    out = pair.initiate(name="net")
    assert out.returncode == 1 and "NO_PROPOSAL_CHOSEN" in _first_line(out)


def test_silent_peer_times_out_and_daemon_stays_responsive(make_pair) -> None:
    pair = make_pair(start_b=False)
    assert pair.a is not None
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(out=pair.initiate(timeout=8)))
    waiter.start()
    try:
        # while that initiate waits, other commands are answered
        for _ in range(5):
            assert isinstance(pair.a.call("status"), dict)
        assert waiter.is_alive()
    finally:
        waiter.join()
    out = result["out"]
    assert out.returncode == 1
    assert _first_line(out).startswith(f"peer: failed: timeout with {B_IP} (no outcome within 8 s")
    assert "we offered IKE proposals: aes128gcm16-prfsha256-x25519" in out.stdout
