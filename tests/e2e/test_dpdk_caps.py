"""Real DPDK capability discovery on virtual devices (EAL in a child process), fed to placement."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from support.sa import make_sa as build_sa

from fastpath.dpdk.caps import DpdkCaps, discover_in_subprocess
from fastpath.dpdk.eal import DpdkUnavailable, EalError, availability, eal_args
from fastpath.placement import EngineKind, crypto_needs, esp_algorithms, missing_crypto, place

ROOT = Path(__file__).resolve().parents[2]
IPSECGW = Path(sys.executable).parent / "ipsecgw"
VDEVS = ["crypto_aesni_gcm0", "crypto_aesni_mb0", "crypto_openssl0", "crypto_null0", "net_ring0", "net_null0"]

# only the key sizes matter to placement
sa = partial(build_sa, spi=0x2000, keys="zero", src="10.0.0.1", dst="10.0.0.2")
present, why = availability()
needs_dpdk = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")


@pytest.fixture(scope="module")
def caps() -> DpdkCaps:
    if not present:
        pytest.skip(why)
    return discover_in_subprocess(VDEVS)


def test_eal_args_shape():
    args = eal_args(["crypto_null0"], file_prefix="x")
    assert args[:3] == ["ipsecgw", "--no-huge", "-m"] and "--no-pci" in args
    assert args[args.index("--file-prefix") + 1] == "x" and args[-2:] == ["--vdev", "crypto_null0"]
    assert "--no-pci" not in eal_args(pci=["0000:01:00.0"])


@needs_dpdk
def test_devices_found(caps):
    assert caps.version.startswith("DPDK ")
    assert "--no-huge" in caps.eal_args
    assert sorted(c.name for c in caps.cryptodevs) == sorted(v for v in VDEVS if v.startswith("crypto"))
    assert sorted(e.name for e in caps.ethdevs) == ["net_null0", "net_ring0"]
    assert len({c.dev_id for c in caps.cryptodevs}) == 4


@needs_dpdk
def test_aesni_gcm(caps):
    gcm = next(c for c in caps.cryptodevs if c.driver == "crypto_aesni_gcm")
    assert gcm.symmetric and gcm.cpu_crypto and not gcm.security
    aead = next(s for s in gcm.sym if s.xform == "aead" and s.algo == "aes-gcm")
    assert 16 in aead.key and 32 in aead.key and 24 in aead.key
    assert 16 in aead.digest and 12 in aead.iv and 8 in aead.aad and 12 in aead.aad
    assert {s.algo for s in gcm.sym} == {"aes-gcm", "aes-gmac"}
    assert esp_algorithms(gcm.sym, gcm.chaining) == [f"aes-{m}-{b}" for m in ("gcm", "gmac") for b in (128, 192, 256)]


@needs_dpdk
def test_aesni_mb(caps):
    mb = next(c for c in caps.cryptodevs if c.driver == "crypto_aesni_mb")
    assert mb.cpu_crypto and mb.chaining
    algos = {(s.xform, s.algo) for s in mb.sym}
    assert {("aead", "chacha20-poly1305"), ("cipher", "aes-cbc"), ("auth", "sha2-256-hmac"),
            ("auth", "sha2-512-hmac"), ("aead", "aes-gcm")} <= algos
    hmac = next(s for s in mb.sym if s.algo == "sha2-384-hmac")
    assert 24 in hmac.digest and 48 in hmac.key
    # aesni_mb's rte_security offers DOCSIS, not IPsec: nothing for placement's protocol rungs.
    assert mb.security and {c.protocol for c in mb.security} == {"docsis"}
    assert all(c.ipsec_proto is None for c in mb.security)


@needs_dpdk
def test_openssl_and_null(caps):
    ossl = next(c for c in caps.cryptodevs if c.driver == "crypto_openssl")
    assert ossl.symmetric and not ossl.cpu_crypto and not ossl.security
    assert {"aes-gcm", "aes-cbc", "sha2-256-hmac", "aes-gmac"} <= {s.algo for s in ossl.sym}
    null = next(c for c in caps.cryptodevs if c.driver == "crypto_null")
    assert {s.algo for s in null.sym} == {"null"}
    assert esp_algorithms(null.sym) == []


@needs_dpdk
def test_virtual_ports_have_no_security(caps):
    for e in caps.ethdevs:
        assert not e.security and not e.rx_security and not e.tx_security
        assert e.max_rx_queues >= 1


@needs_dpdk
def test_discovered_tables_drive_placement(caps):
    gcm = place(sa("aes-gcm-128"), "out", caps)
    assert str(gcm.engine) == "lookaside-crypto:crypto_aesni_gcm0"
    kinds = [c.kind for c in gcm.eligible]
    assert EngineKind.CPU_CRYPTO in kinds and kinds[-1] == EngineKind.SOFTWARE
    assert "no aes-gcm" in dict((str(c), r) for c, r in gcm.skipped)["lookaside-crypto:crypto_null0"]
    for rung in ("inline-protocol:-", "inline-crypto:-", "lookaside-protocol:crypto_aesni_mb0"):
        assert rung in {str(c) for c, _ in gcm.skipped}
    assert str(place(sa("chacha20-poly1305"), "in", caps).engine) == "lookaside-crypto:crypto_aesni_mb0"
    esn_cbc = place(sa("aes-cbc-128", "hmac-sha256-128", esn=True), "in", caps)
    assert str(esn_cbc.engine) == "lookaside-crypto:crypto_aesni_mb0"
    for c in esn_cbc.eligible:
        if c.kind != EngineKind.SOFTWARE:
            dev = next(d for d in caps.cryptodevs if d.name == c.device)
            assert missing_crypto(sa("aes-cbc-128", "hmac-sha256-128", esn=True), dev.sym) is None
    assert len(crypto_needs(sa("aes-cbc-128", "hmac-sha256-128"))) == 2


@needs_dpdk
def test_bad_vdev_reports_eal_error():
    with pytest.raises(EalError):
        discover_in_subprocess(["crypto_no_such_driver0"])


@needs_dpdk
def test_cli_caps_json_and_table():
    r = subprocess.run([str(IPSECGW), "caps", "--json", "--dpdk-vdev", "crypto_aesni_gcm0", "--dpdk-vdev",
                        "net_ring0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["dpdk"]
    assert d["present"] and d["detail"].startswith("DPDK")
    devs = {x["device"]: x for x in d["devices"]}
    assert devs["crypto_aesni_gcm0"]["offloads"] == ["lookaside-crypto", "cpu-crypto"]
    assert "aes-gcm-128" in devs["crypto_aesni_gcm0"]["esp_algorithms"]
    assert devs["net_ring0"]["type"] == "ethdev" and devs["net_ring0"]["offloads"] == []
    assert DpdkCaps.from_dict(d["tables"]).cryptodevs[0].driver == "crypto_aesni_gcm"

    r = subprocess.run([str(IPSECGW), "caps"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "DPDK: present" in r.stdout
    for dev in ("crypto_aesni_gcm0", "crypto_aesni_mb0", "crypto_openssl0"):
        assert dev in r.stdout
    assert "cpu-crypto" in r.stdout and "ESP: aes-gcm-128" in r.stdout
    assert "AH: not offloaded" in r.stdout            # per device: AH runs in a software engine only

    r = subprocess.run([str(IPSECGW), "caps", "--no-dpdk", "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)["dpdk"]["devices"] == []


def test_caps_says_why_dpdk_is_absent():
    """With the binding unimportable (as on a machine built without libdpdk-dev) caps still works."""
    code = ("import sys; sys.modules['fastpath._dpdk'] = None\n"
            "from control.cli import main; sys.exit(main(['caps']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "DPDK: absent (the DPDK binding fastpath._dpdk was not built" in r.stdout
    code = "import sys; sys.modules['fastpath._dpdk'] = None\nfrom fastpath.dpdk.eal import load; load()\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0 and f"{DpdkUnavailable.__name__}: the DPDK binding" in r.stderr


def test_console_script_caps():
    """``ipsecgw caps`` through the installed script, as JSON and as the table."""
    r = subprocess.run([str(IPSECGW), "caps", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    caps = json.loads(r.stdout)
    names = {e["name"]: e for e in caps["engines"]}
    assert set(names) >= {"reference", "openssl"}
    assert names["reference"]["present"] and "aes-gcm-128" in names["reference"]["algorithms"]
    assert "reference" in caps["algorithms"]["hmac-sha256-128"]
    # AH: every present engine here serves every AH algorithm (the C engines and the reference)
    present = {n for n, e in names.items() if e["present"]}
    assert set(caps["ah_algorithms"]) >= {"hmac-sha1-96", "aes-gmac-128"}
    assert all(set(served) == present for served in caps["ah_algorithms"].values()), caps["ah_algorithms"]
    assert set(caps["cpu"]["features"]) == {"aes", "pclmulqdq", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni"}

    r = subprocess.run([str(IPSECGW), "caps"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "Engines:" in r.stdout and "reference" in r.stdout and "aes-gcm-128" in r.stdout
    assert "pclmulqdq" in r.stdout
