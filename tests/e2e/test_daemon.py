"""Two of our daemons on loopback (distinct addresses and ports) negotiate from their configs.

Each one's shared-memory region must hold the CHILD SA: our outbound SA is the
peer's inbound one (SPI and keys), and a packet our outbound SA encrypts
decrypts on the peer's inbound SA.  The operator verbs go over the control
socket, a trap policy turns an ACQUIRE into a negotiation, and SIGTERM leaves
an empty region behind.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemon_harness import ROOT, DaemonProc, gateway_yaml, installed_child, region_sas
from support.packets import ipv4, udp

from cdefs.sa import Direction
from control.ctl import ControlError
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.shm import FastpathRegion
from fastpath.status import Status

A_IP, B_IP = "127.0.0.1", "127.0.0.2"
A_TS, B_TS = "10.1.0.0/16", "10.2.0.0/16"


def _ports() -> tuple[int, int, int, int]:
    base = 20000 + (os.getpid() * 7 + random.randrange(1000)) % 30000
    return base, base + 1, base + 2, base + 3


@pytest.fixture
def pair(tmp_path: Path):
    """Daemon A (start_action=start) and B (start_action=trap for its side of the same child)."""
    a_ike, a_natt, b_ike, b_natt = _ports()
    procs = []

    def make(tag, ike, natt, local, remote, rport, rnatt, lid, rid, lts, rts, action):
        shm, sock, cfg = tmp_path / f"{tag}.shm", tmp_path / f"{tag}.sock", tmp_path / f"{tag}.yaml"
        cfg.write_text(gateway_yaml(shm=shm, sock=sock, ike_port=ike, natt_port=natt, local=local, remote=remote,
                                    remote_port=rport, remote_natt_port=rnatt, local_id=lid, remote_id=rid,
                                    local_ts=lts, remote_ts=rts, start_action=action))
        return cfg, sock, shm

    b = make("b", b_ike, b_natt, B_IP, A_IP, a_ike, a_natt, "gw-b.example", "gw-a.example", B_TS, A_TS, "trap")
    a = make("a", a_ike, a_natt, A_IP, B_IP, b_ike, b_natt, "gw-a.example", "gw-b.example", A_TS, B_TS, "none")
    try:
        procs.append(DaemonProc(*b))
        procs.append(DaemonProc(*a))
        yield procs[1], procs[0]
    finally:
        for p in procs:
            p.stop()


def _esp_roundtrip(out_sa, in_sa, src: str, dst: str) -> bytes:
    inner = ipv4(src, dst, 17, udp(src, dst, 1234, 5678, b"through the daemon's SA"))
    tx, rx = create("best"), create("best")
    try:
        tx.add_sa(0, out_sa, Direction.OUT)
        rx.add_sa(0, in_sa, Direction.IN)
        b = Batch(capacity=1)
        b.append(inner, 0)
        tx.outbound(b)
        assert Status(int(b.status[0])) == Status.OK
        esp = b.packet(0)
        b2 = Batch(capacity=1)
        b2.append(esp)
        rx.inbound(b2)
        assert Status(int(b2.status[0])) == Status.OK
        assert b2.packet(0) == inner
        return esp
    finally:
        tx.close()
        rx.close()


def _tshark_decrypts(esp_packet: bytes, esp_sa: str, tmp_path: Path) -> None:
    """Wireshark, with nothing but our exported esp_sa lines, authenticates and decrypts our ESP."""
    if shutil.which("tshark") is None:
        return
    from scapy.layers.inet import IP
    from scapy.utils import wrpcap

    pcap = tmp_path / "esp.pcap"
    wrpcap(str(pcap), [IP(esp_packet)])
    args = ["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "esp.enable_authentication_check:TRUE"]
    for line in esp_sa.splitlines():
        args += ["-o", f"uat:esp_sa:{line}"]
    out = subprocess.run(args + ["-T", "fields", "-e", "esp.icv_good", "-e", "udp.dstport"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    good, dport = out.stdout.strip().split("\t")
    assert good == "1" and dport == "5678", out.stdout


def test_pair_negotiates_into_both_regions(pair, tmp_path: Path) -> None:
    a, b = pair
    assert installed_child(a.call("list-sas")) is None
    assert "initiating peer" in a.call("initiate", name="peer")
    ca = a.wait_for(installed_child)
    cb = b.wait_for(installed_child)
    assert ca["spi_out"] == cb["spi_in"] and ca["spi_in"] == cb["spi_out"]
    assert ca["proposal"] == cb["proposal"] == "aes-gcm-128"
    assert ca["local_ts"] == [A_TS] and ca["remote_ts"] == [B_TS] and cb["local_ts"] == [B_TS]

    ra, rb = region_sas(a.shm), region_sas(b.shm)
    out_a = ra[ca["slot_out"]]
    in_b = rb[cb["slot_in"]]
    assert out_a[1] == Direction.OUT and in_b[1] == Direction.IN
    assert f"{out_a[0].spi:08x}" == ca["spi_out"]
    assert out_a[0].enc_key == in_b[0].enc_key and out_a[0].spi == in_b[0].spi
    esp = _esp_roundtrip(out_a[0], in_b[0], "10.1.0.1", "10.2.0.1")
    _tshark_decrypts(esp, a.call("export-keys", format="wireshark")["esp_sa"], tmp_path)
    _esp_roundtrip(rb[cb["slot_out"]][0], ra[ca["slot_in"]][0], "10.2.0.1", "10.1.0.1")

    # the outbound policy in A's region selects A's outbound SA
    r = FastpathRegion.attach(a.shm)
    try:
        m = r.lookup_policy("10.1.2.3", "10.2.3.4")
        assert m is not None and m.sas == (ca["slot_out"],)
        assert r.lookup_policy("10.9.0.1", "10.2.3.4") is None
    finally:
        r.close()

    # the IKE SA as both ends see it
    ia = next(i for i in a.call("list-sas") if i["state"] == "ESTABLISHED")
    assert ia["initiator"] and ia["proposal"] == "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519"
    assert ia["local"]["id"] == "gw-a.example" and ia["remote"]["id"] == "gw-b.example"

    # rekey over the socket: new SPIs on both ends, the old outbound SA leaves A's region
    assert "rekeying" in a.call("rekey", name="net")
    ca2 = a.wait_for(lambda sas: (c := installed_child(sas)) and c["spi_in"] != ca["spi_in"] and c)
    cb2 = b.wait_for(lambda sas: (c := installed_child(sas)) and c["spi_in"] != cb["spi_in"] and c)
    assert ca2["spi_out"] == cb2["spi_in"]
    # the old outbound SA stays until the old pair is removed (a batch classified onto it may still be in the
    # fastpath), which follows A's Delete of it within a round trip
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and ca["slot_out"] in (sas := region_sas(a.shm)) \
            and sas[ca["slot_out"]][0].spi == out_a[0].spi:
        time.sleep(0.05)
    sas = region_sas(a.shm)
    assert ca["slot_out"] not in sas or sas[ca["slot_out"]][0].spi != out_a[0].spi

    # terminate: A deletes, B hears the Delete, both regions end up empty
    assert "terminated 1 IKE SA" in a.call("terminate", name="peer")
    b.wait_for(lambda sas: not any(i["state"] == "ESTABLISHED" for i in sas))
    assert region_sas(a.shm) == {}
    b.wait_for(lambda sas: region_sas(b.shm) == {})

    # operator mistakes come back as errors, not crashes
    with pytest.raises(ControlError, match="no connection or child named 'nope'"):
        a.call("initiate", name="nope")
    with pytest.raises(ControlError, match="unknown command"):
        a.call("frobnicate")


def test_trap_acquire_and_clean_shutdown(pair) -> None:
    a, b = pair
    # B runs a trap policy: a packet from B's side with no SA makes the fastpath post an ACQUIRE
    r = FastpathRegion.attach(b.shm)
    try:
        m = r.lookup_policy("10.2.0.7", "10.1.0.9")
        assert m is not None and m.sas == ()                  # PROTECT, unbound: trap
        assert r.acquire(m.policy, "10.2.0.7", "10.1.0.9", 17, 1000, 2000)
    finally:
        r.close()
    cb = b.wait_for(installed_child)
    ib = next(i for i in b.call("list-sas") if i["state"] == "ESTABLISHED")
    assert ib["initiator"]                                   # B initiated on the ACQUIRE
    a.wait_for(installed_child)
    r = FastpathRegion.attach(b.shm)
    try:
        assert r.lookup_policy("10.2.0.7", "10.1.0.9").sas == (cb["slot_out"],)
    finally:
        r.close()
    assert "gw-a.example" in b.log_text() and "ACQUIRE for peer/net" in b.log_text()

    # export-keys: both Wireshark tables; the ESP keys are the ones in the region
    tables = b.call("export-keys", format="wireshark")
    esp_lines = tables["esp_sa"].splitlines()
    assert len(esp_lines) == 2 and f'"0x{cb["spi_in"]}"' in tables["esp_sa"]
    out_key = region_sas(b.shm)[cb["slot_out"]][0].enc_key.hex()
    assert out_key in tables["esp_sa"]
    assert tables["ikev2_decryption_table"].count('"AES-GCM-128 with 16 octet ICV [RFC5282]"') == 1
    assert out_key not in b.log_text()                       # keys never reach the log

    # SIGTERM: Delete sent, SAs and policies gone from the region, socket removed, exit 0
    assert b.stop(signal.SIGTERM) == 0
    assert region_sas(b.shm) == {}
    r = FastpathRegion.attach(b.shm)
    try:
        assert r.lookup_policy("10.2.0.7", "10.1.0.9") is None
    finally:
        r.close()
    assert not b.sock.exists()
    a.wait_for(lambda sas: not any(i["state"] == "ESTABLISHED" for i in sas))
    assert "deleted" in a.log_text()


def test_run_refuses_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("connections:\n  x:\n    local_addrs: [1.2.3.4]\n    children: {c: {local_ts: [10.0.0.0/8], "
                   "remote_ts: [nonsense]}}\n")
    out = subprocess.run([sys.executable, "-m", "control.cli", "run", "-c", str(cfg), "--control-only"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{cfg}:4: connections.x.children.c.remote_ts[0]: expected a subnet" in out.stderr
