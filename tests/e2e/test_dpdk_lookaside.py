"""ESP from a real lookaside cryptodev (enqueue/dequeue burst, standalone holder) decrypts with our engine and scapy."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from cdefs.sa import SA
from fastpath.batch import Batch
from fastpath.dpdk.eal import availability
from fastpath.engines import create
from fastpath.status import Status

ROOT = Path(__file__).resolve().parents[2]
present, why = availability()
pytestmark = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")

KEYS = {"aes-gcm-128": bytes(range(20)), "aes-gcm-256": bytes(range(50, 86))}

# EAL runs in a child so the test process stays free of DPDK.
CHILD = textwrap.dedent("""
    import ipaddress, json, sys
    from fastpath.batch import Batch
    from fastpath.dpdk import eal
    from fastpath.dpdk.lookaside import LookasideOutbound
    from cdefs.sa import SA
    vdev, enc, key, packets = json.load(sys.stdin)
    eal.init(eal.eal_args([vdev], memory_mb=256))
    sa = SA(spi=0x4242, src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
            enc=enc, enc_key=bytes.fromhex(key), seq=7)
    la = LookasideOutbound(0, sa)
    b = Batch(capacity=len(packets))
    b.extend(bytes.fromhex(p) for p in packets)
    sent = la.outbound(b)
    print(json.dumps({"sent": sent, "seq": la.seq, "status": [int(s) for s in b.status[:b.n]],
                      "out": [p.hex() for p in b]}))
    la.close()
    eal.cleanup()
""")


def sa_for(enc: str) -> SA:
    return SA(spi=0x4242, src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"), enc=enc,
              enc_key=KEYS[enc], seq=7)


@pytest.mark.parametrize(("vdev", "enc"), [("crypto_aesni_gcm0", "aes-gcm-128"), ("crypto_aesni_gcm0", "aes-gcm-256"),
                                           ("crypto_openssl0", "aes-gcm-128")])
def test_cryptodev_esp_decrypts_with_software_engine_and_scapy(vdev, enc):
    inner = [bytes(IP(src="10.0.0.1", dst="10.0.0.2", tos=0xB9, flags="DF" if k % 2 else 0) / UDP(sport=1, dport=2)
                   / Raw(bytes([k]) * k)) for k in range(1, 140)]
    job = json.dumps([vdev, enc, KEYS[enc].hex(), [p.hex() for p in inner]])
    r = subprocess.run([sys.executable, "-c", CHILD], input=job, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["sent"] == len(inner) and set(res["status"]) == {Status.OK}
    assert res["seq"] == 7 + len(inner)
    esp = [bytes.fromhex(h) for h in res["out"]]

    # Our software engine (inbound) takes every packet back to the original.
    engine = create("best")
    engine.add_sa(0, sa_for(enc), "in")
    b = Batch(capacity=len(esp))
    b.extend(esp)
    engine.inbound(b)
    assert [Status(int(s)) for s in b.status[:b.n]] == [Status.OK] * len(esp)
    assert list(b) == inner
    assert engine.stats(0).seq == 7 + len(inner) - 1

    # The software engine's own outbound output is byte-identical (same framing contract).
    out_engine = create("best")
    out_engine.add_sa(0, sa_for(enc), "out")
    b2 = Batch(capacity=len(inner))
    b2.extend(inner)
    out_engine.outbound(b2)
    assert list(b2) == esp

    # scapy, which we did not write, agrees.
    ssa = SecurityAssociation(ESP, spi=0x4242, crypt_algo="AES-GCM", crypt_key=KEYS[enc],
                              tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    for pkt, want in zip(esp[:10], inner[:10], strict=True):
        parsed = IP(pkt)
        assert parsed.proto == 50 and parsed[ESP].seq >= 7
        assert bytes(ssa.decrypt(parsed)) == want
