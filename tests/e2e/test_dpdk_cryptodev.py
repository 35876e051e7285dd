"""ESP through DPDK crypto sessions (lookaside cryptodev and CPU crypto) as a per-SA back end of our ESP core.

One child process (EAL starts once per process) discovers the real capabilities of
crypto_aesni_gcm, crypto_aesni_mb, crypto_openssl and crypto_null, and for every
device, rung and algorithm the device really covers runs our ESP core with the SA on
a session there: outbound of inner packets, and inbound of ESP made here by the
pure-Python reference engine and by scapy, with a duplicate, a forged ICV, an old
packet and an ESN wrap mixed in.  This process checks the results against the
reference engine and scapy, which do not share the C code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from scapy.all import IP
from support.dpdk_cells import ALGS, ESN_START, N_INNER, inner_packets, make_sa, run_engine, sa_json
from support.sa import scapy_sa

from cdefs.sa import SA
from fastpath.batch import Batch
from fastpath.dpdk.eal import availability
from fastpath.engines import create
from fastpath.status import Status

ROOT = Path(__file__).resolve().parents[2]
present, why = availability()
pytestmark = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")

VDEVS = ["crypto_aesni_gcm0", "crypto_aesni_mb0", "crypto_openssl0", "crypto_null0"]
def inbound_input(sa: SA, inner: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ESP for the inbound check: the reference engine's, a duplicate, a forged ICV on an unseen number
    (its genuine packet follows), then scapy's ESP for the IPv4 packets on fresh numbers and an old one."""
    _, ref = run_engine(create("reference", capacity=1), sa, "out", inner)
    forged = bytearray(ref[-1])
    forged[-1] ^= 0x01
    seq_after = sa.seq + len(inner)
    resumed = make_sa(sa.enc, sa.integ, sa.esn, seq=seq_after)
    ssa = scapy_sa(resumed, seq=resumed.seq, tunnel=True)
    v4 = [p for p in inner if p[0] >> 4 == 4]
    from_scapy = []
    for p in v4:
        pkt = ssa.encrypt(IP(p))
        from_scapy.append(bytes(pkt))
    # Window 32: an ESP seen far before the top is too old by the end; ref[0] is a replay anyway.
    esp = ref[:-1] + [ref[1], bytes(forged), ref[-1]] + from_scapy + [ref[0]]
    expect_inner = inner[:-1] + [b"", b"", inner[-1]] + v4 + [b""]
    return esp, expect_inner


CHILD = textwrap.dedent("""
    import ipaddress, json, sys
    from fastpath.batch import Batch
    from fastpath.dpdk import eal
    from fastpath.dpdk.caps import discover
    from fastpath.dpdk.loop import LoopEngine
    from fastpath.dpdk.sessions import SessionTable, add_session_sa, session_stats
    from fastpath.engines.base import EngineError
    from fastpath.placement import Candidate, EngineKind, Placement, missing_crypto, place
    from cdefs.sa import SA

    job = json.load(sys.stdin)
    eal.init(eal.eal_args(job["vdevs"], memory_mb=256))
    caps = discover()

    def sa_of(d):
        return SA(spi=d["spi"], src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
                  enc=d["enc"], enc_key=bytes.fromhex(d["enc_key"]), integ=d["integ"],
                  integ_key=bytes.fromhex(d["integ_key"]), esn=d["esn"], seq=d["seq"], replay_window=32)

    def run(engine, direction, packets):
        b = Batch(capacity=len(packets))
        b.extend(bytes.fromhex(p) for p in packets)
        (engine.outbound if direction == "out" else engine.inbound)(b)
        return [int(s) for s in b.status[:b.n]], [p.hex() for p in b]

    res = {"caps": {}, "cases": [], "fallbacks": {}}
    for d in caps.cryptodevs:
        res["caps"][d.name] = {"lookaside": d.symmetric, "cpu": d.cpu_crypto, "chaining": d.chaining}
    for case in job["cases"]:
        sa = sa_of(case["sa"])
        for d in caps.cryptodevs:
            kinds = ([EngineKind.LOOKASIDE_CRYPTO] if d.symmetric else []) + \\
                    ([EngineKind.CPU_CRYPTO] if d.cpu_crypto else [])
            for kind in kinds:
                if missing_crypto(sa, d.sym) is not None or (sa.integ and not d.chaining):
                    continue
                out = {"dev": d.name, "kind": str(kind), "case": case["name"]}
                eng_out, eng_in = LoopEngine(4), LoopEngine(4)
                try:
                    add_session_sa(eng_out, 0, sa, "out", d.name, kind)
                    add_session_sa(eng_in, 0, sa, "in", d.name, kind)
                except EngineError as exc:
                    out["error"] = str(exc)
                else:
                    out["out_status"], out["out"] = run(eng_out, "out", case["inner"])
                    out["in_status"], out["in"] = run(eng_in, "in", case["esp"])
                    st = eng_in.stats(0)
                    out["in_stats"] = {"packets": st.packets, "seq": st.seq,
                                       "drops": {s.name: n for s, n in st.drops.items()}}
                    out["out_seq"] = eng_out.stats(0).seq
                    ss = session_stats(eng_in)
                    out["session_stats"] = ss.__dict__ if ss else None
                    eng_in.remove_sa(0)
                    out["sessions_after_delete"] = session_stats(eng_in).sessions
                eng_out.close()
                eng_in.close()
                res["cases"].append(out)

    # Fall-backs, for real.
    fb = job["fallback"]
    # (1) an algorithm the vdev lacks: AES-GCM on crypto_null, a real DPDK session-create failure.
    sa = sa_of(fb["gcm"])
    eng = LoopEngine(4)
    table = SessionTable(eng, caps)
    forced = Placement(sa.spi, "out", (Candidate(EngineKind.LOOKASIDE_CRYPTO, "crypto_null0"),
                                       Candidate(EngineKind.CPU_CRYPTO, "crypto_openssl0"),
                                       Candidate(EngineKind.SOFTWARE, "ipsec-mb-core")))
    p = table.install(0, sa, "out", placement=forced)
    st, esp = run(eng, "out", fb["inner"])
    res["fallbacks"]["lacks"] = {"placement": p.to_dict(), "on_session": table.is_session(0), "status": st,
                                 "out": esp}
    # (2) the discovered placement: GCM goes to a lookaside cryptodev.
    eng2 = LoopEngine(4)
    t2 = SessionTable(eng2, caps)
    p2 = t2.install(0, sa, "out")
    st2, esp2 = run(eng2, "out", fb["inner"])
    res["fallbacks"]["placed"] = {"placement": p2.to_dict(), "on_session": t2.is_session(0), "status": st2,
                                  "out": esp2, "listed": {str(k): v for k, v in t2.placements().items()}}
    t2.remove(0)
    res["fallbacks"]["placed"]["sessions_after_delete"] = t2.stats().sessions
    # (4) one engine, three back ends in the same rounds: mixed rounds are split and put back in order.
    mixed = [sa_of(m) for m in job["mixed"]["sas"]]
    rungs = [("crypto_aesni_gcm0", EngineKind.LOOKASIDE_CRYPTO), (None, None),
             ("crypto_aesni_mb0", EngineKind.CPU_CRYPTO)]
    eo, ei = LoopEngine(4), LoopEngine(4)
    for i, (msa, (dev, kind)) in enumerate(zip(mixed, rungs)):
        for e, d in ((eo, "out"), (ei, "in")):
            if dev is None:
                e.add_sa(i, msa, d)
            else:
                add_session_sa(e, i, msa, d, dev, kind)
    b = Batch(capacity=len(job["mixed"]["inner"]))
    b.extend(bytes.fromhex(p) for p in job["mixed"]["inner"])
    b.sa[:b.n] = job["mixed"]["sa_of"]
    eo.outbound(b)
    res["mixed"] = {"out_status": [int(x) for x in b.status[:b.n]], "out": [p.hex() for p in b]}
    res["mixed"]["in_status"], res["mixed"]["in"] = run(ei, "in", job["mixed"]["esp"])
    res["mixed"]["on_session"] = [int(ei._lib.ipsg_cdev_sa_on_session(ei.handle, i)) for i in range(3)]
    for e in (eng, eng2, eo, ei):
        e.close()
    print(json.dumps(res))
""")


@pytest.fixture(scope="module")
def child() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    inner = inner_packets()
    cases, meta = [], {}
    for enc, integ in ALGS:
        for esn in (False, True):
            sa = make_sa(enc, integ, esn)
            esp, expect = inbound_input(sa, inner)
            name = f"{enc}{'+' + integ if integ else ''}{'-esn' if esn else ''}"
            cases.append({"name": name, "sa": sa_json(sa), "inner": [p.hex() for p in inner],
                          "esp": [p.hex() for p in esp]})
            meta[name] = {"sa": sa, "esp": esp, "expect": expect}
    job = {"vdevs": VDEVS, "cases": cases, "mixed": mixed_job(inner), "fallback": {
        "gcm": sa_json(make_sa("aes-gcm-128", None, False)),
        "inner": [p.hex() for p in inner]}}
    r = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(job), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), meta


MIXED = [("aes-gcm-128", None), ("chacha20-poly1305", None), ("aes-cbc-128", "hmac-sha256-128")]


def mixed_sas() -> list[SA]:
    return [make_sa(enc, integ, False, spi=0x7100 + i) for i, (enc, integ) in enumerate(MIXED)]


def mixed_job(inner: list[bytes]) -> dict[str, Any]:
    """Packets spread over three SAs (a lookaside session, the core's ipsec-mb, a CPU-crypto session)."""
    sas = mixed_sas()
    sa_of = [k % 3 if k % 5 else 0 for k in range(3 * N_INNER)]
    packets = (inner * 3)[:len(sa_of)]
    esp: list[bytes] = [b""] * len(sa_of)
    # reference-engine ESP, one engine per SA keeps each SA's numbers running
    engines = [create("reference", capacity=1) for _ in sas]
    for e, sa in zip(engines, sas, strict=True):
        e.add_sa(0, sa, "out")
    for k, i in enumerate(sa_of):
        b = Batch(capacity=1)
        b.extend([packets[k]])
        engines[i].outbound(b)
        esp[k] = list(b)[0]
    forged = bytearray(esp[7])
    forged[-3] ^= 0x40
    esp[7] = bytes(forged)
    return {"sas": [sa_json(s) for s in sas], "inner": [p.hex() for p in packets], "sa_of": sa_of,
            "esp": [p.hex() for p in esp]}


def test_mixed_rounds_over_three_back_ends_in_one_engine(child):
    res, _ = child
    m = res["mixed"]
    job = mixed_job(inner_packets())
    assert m["on_session"] == [1, 0, 1]
    assert m["out_status"] == [Status.OK] * len(job["sa_of"])
    sas = mixed_sas()
    packets = [bytes.fromhex(p) for p in job["inner"]]
    for i, sa in enumerate(sas):
        mine = [k for k, s in enumerate(job["sa_of"]) if s == i]
        st, got = run_engine(create("reference", capacity=1), sa, "in", [bytes.fromhex(m["out"][k]) for k in mine])
        assert st == [Status.OK] * len(mine) and got == [packets[k] for k in mine]
    want = [Status.OK] * len(job["sa_of"])
    want[7] = Status.AUTH_FAILED
    assert m["in_status"] == want
    ok = [bytes.fromhex(h) for h, s in zip(m["in"], m["in_status"], strict=True) if s == Status.OK]
    assert ok == [p for k, p in enumerate(packets) if k != 7]


def test_every_covered_algorithm_ran_on_every_rung(child):
    res, _ = child
    ran = {(c["dev"], c["kind"], c["case"]) for c in res["cases"]}
    assert not [c for c in res["cases"] if "error" in c], [c for c in res["cases"] if "error" in c]
    # Real discovery decides the matrix; these are what the software PMDs are known to cover here.
    assert res["caps"]["crypto_aesni_gcm0"] == {"lookaside": True, "cpu": True, "chaining": True}
    assert not res["caps"]["crypto_openssl0"]["cpu"]
    for kind in ("lookaside-crypto", "cpu-crypto"):
        for case in ("aes-gcm-128", "aes-gcm-256-esn", "aes-gmac-128", "aes-gmac-128-esn"):
            assert ("crypto_aesni_gcm0", kind, case) in ran
        for case in ("chacha20-poly1305-esn", "aes-cbc-256+hmac-sha512-256-esn", "null+hmac-sha384-192"):
            assert ("crypto_aesni_mb0", kind, case) in ran
    assert ("crypto_openssl0", "lookaside-crypto", "aes-cbc-128+hmac-sha256-128") in ran
    assert ("crypto_openssl0", "lookaside-crypto", "aes-gcm-128-esn") in ran
    assert not [c for c in res["cases"] if c["dev"] == "crypto_null0"]   # NULL cipher without HMAC only
    assert len(ran) >= 50


def test_session_esp_decrypts_with_reference_engine_and_scapy(child):
    res, meta = child
    inner = inner_packets()
    for c in res["cases"]:
        m = meta[c["case"]]
        sa = m["sa"]
        where = f"{c['dev']} {c['kind']} {c['case']}"
        assert c["out_status"] == [Status.OK] * N_INNER, where
        esp = [bytes.fromhex(h) for h in c["out"]]
        st, got = run_engine(create("reference", capacity=1), sa, "in", esp)
        assert st == [Status.OK] * N_INNER and got == inner, where
        assert c["out_seq"] == sa.seq + N_INNER, where
        if sa.enc_alg.name.startswith("aes-cbc"):
            assert len({p[28:44] for p in esp}) == N_INNER, where        # random IVs
        else:   # deterministic IVs: byte-identical with the software engine's ESP
            _, sw = run_engine(create("best", capacity=1), sa, "out", inner)
            assert esp == sw, where
        ssa = scapy_sa(sa, seq=sa.seq, tunnel=True)
        for k, (pkt, want) in enumerate(zip(esp, inner, strict=True)):
            if k % 3 == 0:   # scapy is slow; a third of each case
                assert bytes(ssa.decrypt(IP(pkt), esn_en=sa.esn, esn=(sa.seq + k) >> 32)) == want, where


def test_reference_and_scapy_esp_decrypts_through_sessions_with_replay_and_icv_checks(child):
    res, meta = child
    for c in res["cases"]:
        m = meta[c["case"]]
        where = f"{c['dev']} {c['kind']} {c['case']}"
        # The reference engine on the same input gives the verdicts the sessions must give.
        want_st, want_out = run_engine(create("reference", capacity=1), m["sa"], "in", m["esp"])
        assert c["in_status"] == [int(s) for s in want_st], where
        assert Status.AUTH_FAILED in want_st and Status.REPLAY in want_st
        got = [bytes.fromhex(h) for h, s in zip(c["in"], c["in_status"], strict=True) if s == Status.OK]
        assert got == [p for p in m["expect"] if p], where
        assert c["in_stats"]["drops"] == {"AUTH_FAILED": 1, "REPLAY": 2}, where
        assert c["in_stats"]["packets"] == len(got), where
        assert c["session_stats"]["auth_failed"] == 1 and c["session_stats"]["errors"] == 0, where
        if c["kind"] == "lookaside-crypto":
            assert c["session_stats"]["enqueued"] == c["session_stats"]["dequeued"] > 0
        else:
            assert c["session_stats"]["cpu_ops"] > 0 and c["session_stats"]["enqueued"] == 0
        assert c["sessions_after_delete"] == 0, where


def test_esn_high_half_advanced_across_the_wrap(child):
    res, meta = child
    esn = [c for c in res["cases"] if c["case"].endswith("-esn")]
    assert esn
    for c in esn:
        # 10 outbound from 2^32-3, then scapy's on fresh numbers after them: the window top is past 2^32.
        assert c["in_stats"]["seq"] > 2**32
        assert c["out_seq"] == ESN_START + N_INNER


def test_fallback_when_the_vdev_lacks_the_algorithm(child):
    res, _ = child
    fb = res["fallbacks"]["lacks"]
    pl = fb["placement"]
    assert pl["engine"] == "software:ipsec-mb-core" and not fb["on_session"]
    reasons = {s["engine"]: s["reason"] for s in pl["skipped"]}
    assert "rte_cryptodev_sym_session_create on crypto_null0" in reasons["lookaside-crypto:crypto_null0"]
    assert reasons["cpu-crypto:crypto_openssl0"] == "crypto_openssl0 does not offer CPU crypto"
    # Traffic runs on the engine it fell back to.
    assert fb["status"] == [Status.OK] * N_INNER
    sa = make_sa("aes-gcm-128", None, False)
    st, got = run_engine(create("reference", capacity=1), sa, "in", [bytes.fromhex(h) for h in fb["out"]])
    assert st == [Status.OK] * N_INNER and got == inner_packets()


def test_discovered_placement_uses_a_cryptodev_session(child):
    res, _ = child
    fb = res["fallbacks"]["placed"]
    assert fb["placement"]["engine"].startswith("lookaside-crypto:") and fb["on_session"]
    assert fb["listed"]["0"]["engine"] == fb["placement"]["engine"]
    assert fb["status"] == [Status.OK] * N_INNER
    assert fb["sessions_after_delete"] == 0
