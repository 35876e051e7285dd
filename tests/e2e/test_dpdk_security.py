"""rte_security sessions (inline crypto / inline protocol on a port, lookaside protocol on a cryptodev).

One child process (EAL starts once per process) on net_ring, net_af_packet (on a veth
interface in a namespace of its own) and the crypto vdevs asks DPDK 22.11 for a session
on every rte_security rung, for real (cdefs/dpdk/dpdk_security.c): none of these devices has
an IPsec security context, so each answer must be the device's own refusal.  Then the
protected port is given a capability table claiming inline crypto (as a table for known
hardware would), placement picks that rung first, the session attempt fails with DPDK's
answer, the SA lands on the next rung (a lookaside cryptodev session) and its ESP
decrypts with the pure-Python reference engine, which shares no code with the C path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.dpdk_cells import inner_packets, make_sa, run_engine, sa_json

from fastpath.dpdk.eal import availability
from fastpath.engines import create
from fastpath.status import Status

ROOT = Path(__file__).resolve().parents[2]
present, why = availability()
pytestmark = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")

NS, IFACE = "dsec7ns", "dsec7d"
VDEVS = ["net_ring0", f"net_af_packet0,iface={IFACE}", "crypto_aesni_gcm0", "crypto_aesni_mb0",
         "crypto_openssl0"]

CHILD = textwrap.dedent("""
    import ipaddress, json, sys
    from dataclasses import replace
    from fastpath.batch import Batch
    from fastpath.dpdk import eal
    from fastpath.dpdk.caps import DpdkCaps, SecurityCap, SymCap, Range, discover
    from fastpath.dpdk.loop import LoopEngine
    from fastpath.dpdk.sessions import SessionTable, security_session_new
    from fastpath.engines.base import EngineError
    from fastpath.placement import EngineKind
    from cdefs.sa import SA

    job = json.load(sys.stdin)
    eal.init(eal.eal_args(job["vdevs"], memory_mb=256))
    caps = discover()
    d = job["sa"]
    sa = SA(spi=d["spi"], src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
            enc=d["enc"], enc_key=bytes.fromhex(d["enc_key"]), integ=d["integ"],
            integ_key=bytes.fromhex(d["integ_key"]), esn=d["esn"], seq=d["seq"], replay_window=32)
    eng = LoopEngine(4)
    lib, ffi = eng._lib, eng._ffi
    res = {"ports": [p.name for p in caps.ethdevs], "cdevs": [c.name for c in caps.cryptodevs],
           "answers": {}}
    rungs = [(p.name, k) for p in caps.ethdevs for k in (EngineKind.INLINE_CRYPTO, EngineKind.INLINE_PROTOCOL)]
    rungs += [(c.name, EngineKind.LOOKASIDE_PROTOCOL) for c in caps.cryptodevs]
    rungs += [("net_nosuch0", EngineKind.INLINE_CRYPTO)]
    for dev, kind in rungs:
        for direction in ("out", "in"):
            try:
                s = security_session_new(lib, ffi, sa, direction, dev, kind)
            except EngineError as exc:
                res["answers"][f"{kind}:{dev}:{direction}"] = str(exc)
            else:
                lib.ipsg_sec_session_free(s)
                res["answers"][f"{kind}:{dev}:{direction}"] = None
    res["live"] = lib.ipsg_sec_sessions_live()

    # The port claims inline crypto for AES-GCM-128: placement tries it first, DPDK refuses.
    gcm = SymCap("aead", "aes-gcm", Range(16, 16), Range(16, 16), Range(8, 12, 4), Range(12, 12))
    claim = tuple(SecurityCap("inline-crypto", "ipsec", "esp", "tunnel", dr, frozenset(), 0, (gcm,))
                  for dr in ("egress", "ingress"))
    port = job["port"]
    ethdevs = tuple(replace(p, rx_security=True, tx_security=True, security=claim) if p.name == port else p
                    for p in caps.ethdevs)
    lying = replace(caps, ethdevs=ethdevs)
    out = {}
    for direction in ("out", "in"):
        e = LoopEngine(4)
        t = SessionTable(e, lying, ports=[port])
        p = t.install(0, sa, direction)
        packets = job["inner"] if direction == "out" else job["esp"]
        b = Batch(capacity=len(packets))
        b.extend(bytes.fromhex(x) for x in packets)
        (e.outbound if direction == "out" else e.inbound)(b)
        out[direction] = {"placement": p.to_dict(), "on_session": t.is_session(0),
                          "status": [int(x) for x in b.status[:b.n]], "packets": [x.hex() for x in b]}
        t.remove(0)
        e.close()
    res["placed"] = out
    eng.close()
    print(json.dumps(res))
""")


@pytest.fixture(scope="module")
def child() -> dict[str, Any]:
    sa = make_sa("aes-gcm-128", None, False)
    inner = inner_packets()
    _, esp = run_engine(create("reference", capacity=1), sa, "out", inner)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "add", IFACE, "type", "veth", "peer", "name", IFACE + "p"],
                       check=True)
        for i in (IFACE, IFACE + "p"):
            subprocess.run(["ip", "-n", NS, "link", "set", i, "up"], check=True)
        job = {"vdevs": VDEVS, "sa": sa_json(sa), "port": "net_ring0", "inner": [p.hex() for p in inner],
               "esp": [p.hex() for p in esp]}
        r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", CHILD], input=json.dumps(job),
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["sa"], res["inner_bytes"], res["esp_bytes"] = sa, inner, esp
    return res


def test_every_rte_security_rung_gets_the_devices_answer(child: dict[str, Any]) -> None:
    assert child["ports"] == ["net_ring0", "net_af_packet0"]
    answers = child["answers"]
    for port in child["ports"]:
        for kind in ("inline-crypto", "inline-protocol"):
            for d in ("out", "in"):
                assert answers[f"{kind}:{port}:{d}"] == \
                    f"{port} has no rte_security context (rte_eth_dev_get_sec_ctx returned NULL)"
    for dev in ("crypto_aesni_gcm0", "crypto_openssl0"):
        assert answers[f"lookaside-protocol:{dev}:out"] == \
            f"{dev} has no rte_security context (rte_cryptodev_get_sec_ctx returned NULL)"
    # aesni_mb has a security context (DOCSIS only): the capability query itself says no.
    assert answers["lookaside-protocol:crypto_aesni_mb0:out"] == (
        "crypto_aesni_mb0: rte_security_capability_get found no IPsec ESP lookaside protocol tunnel egress "
        "capability")
    assert answers["lookaside-protocol:crypto_aesni_mb0:in"].endswith("tunnel ingress capability")
    assert answers["inline-crypto:net_nosuch0:out"] == "no ethdev port named net_nosuch0 in this process"
    assert not any("not implemented" in (a or "") for a in answers.values())
    assert child["live"] == 0


def test_placement_falls_back_to_the_next_rung_with_dpdks_reason(child: dict[str, Any]) -> None:
    sa = child["sa"]
    for direction in ("out", "in"):
        r = child["placed"][direction]
        p = r["placement"]
        tried = {x["engine"]: x["reason"] for x in p["skipped"]}
        assert tried["inline-crypto:net_ring0"] == \
            "net_ring0 has no rte_security context (rte_eth_dev_get_sec_ctx returned NULL)"
        assert p["engine"].startswith("lookaside-crypto:"), p
        assert r["on_session"] is True
        assert all(Status(s) == Status.OK for s in r["status"]), r["status"]
    # outbound ESP from the session decrypts with the reference engine to the inner packets
    st, got = run_engine(create("reference", capacity=1), sa, "in",
                         [bytes.fromhex(x) for x in child["placed"]["out"]["packets"]])
    assert st == [Status.OK] * len(child["inner_bytes"])
    assert got == child["inner_bytes"]
    # and the reference engine's ESP decrypts through the session back to the same packets
    assert [bytes.fromhex(x) for x in child["placed"]["in"]["packets"]] == child["inner_bytes"]
