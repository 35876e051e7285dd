"""The DPDK worker loop (rx burst -> ESP core on ipsec-mb -> tx burst) on net_pcap vdevs.

ESP the loop sends decrypts with the pure-Python reference engine and with
scapy; ESP the reference engine makes goes through the loop back to the
plaintext; replayed and forged packets are dropped exactly as the software
engine drops them.  Each loop runs in a child process (EAL starts once per
process).  The gateway worker (cdefs/dpdk/dpdk_gw.c: SPD lookup in the region,
ACQUIRE, both directions on two ports) runs here on two net_pcap ports
against a region control wrote; tests/e2e/test_dpdk_gateway.py runs it end to end.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import support
from scapy.all import IP, UDP, Ether, Raw, rdpcap, wrpcap
from scapy.layers.inet6 import IPv6
from support.dpdk_cells import ALGS, run_engine
from support.dpdk_loop_job import sa_to_json
from support.sa import make_sa as build_sa
from support.sa import scapy_sa

from cdefs.sa import SA
from fastpath.dpdk.eal import availability
from fastpath.engines import create
from fastpath.status import Status

ROOT = Path(__file__).resolve().parents[2]
SUPPORT_PARENT = str(Path(support.__file__).resolve().parent.parent)   # the job runners are support.*
present, why = availability()
pytestmark = pytest.mark.skipif(not present, reason=f"DPDK binding unavailable: {why}")

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
# the job runners rebuild the SA from JSON in the child: fixed keys make a failure repeat byte for byte
make_sa = partial(build_sa, spi=0x5005, keys="fixed", src="192.0.2.1", dst="192.0.2.2")


def inner_packets(n: int) -> list[bytes]:
    out = []
    for k in range(n):
        if k % 5 == 4:
            p = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=k, dport=9) / Raw(bytes([k & 0xFF]) * k)
        else:
            p = IP(src="10.0.0.1", dst="10.0.0.2", tos=k & 0xFF, flags="DF" if k % 2 else 0) / UDP(sport=k, dport=9) \
                / Raw(bytes([k & 0xFF]) * (k * 11 % 1400))
        out.append(bytes(p))
    return out


def write_frames(path: Path, packets: list[bytes]) -> None:
    wrpcap(str(path), [Ether(**MACS, type=0x86DD if p[0] >> 4 == 6 else 0x0800) / Raw(p) for p in packets])


def read_ip(path: Path) -> list[bytes]:
    frames = [bytes(f) for f in rdpcap(str(path))]
    for f in frames:
        assert f[:12] == bytes(Ether(**MACS))[:12]   # the loop keeps the Ethernet addresses
        assert f[12:14] == (b"\x86\xdd" if f[14] >> 4 == 6 else b"\x08\x00")
    return [f[14:] for f in frames]


def run_job(module: str, job: dict[str, Any]) -> dict[str, Any]:
    """``python -m module`` (a job runner in tests/support: EAL starts once per process) with job as JSON on
    stdin; the JSON result on its last line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (SUPPORT_PARENT, os.environ.get("PYTHONPATH"))))}
    r = subprocess.run([sys.executable, "-m", module], input=json.dumps(job), capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_loop(tmp_path: Path, direction: str, sa: SA, packets: list[bytes], burst: int = 32) -> tuple[dict, list]:
    rx, tx = tmp_path / "rx.pcap", tmp_path / "tx.pcap"
    write_frames(rx, packets)
    res = run_job("support.dpdk_loop_job", {
        "vdevs": [f"net_pcap0,rx_pcap={rx},tx_pcap={tx}"], "rx": "net_pcap0", "tx": "net_pcap0",
        "direction": direction, "sas": [[sa_to_json(sa), direction]], "packets": len(packets), "seconds": 20,
        "burst": burst, "memory_mb": 256})
    assert res["rx"] == len(packets)
    return res, read_ip(tx)


def run_gw_job(tmp_path: Path, clear_in: list, prot_in: list, **job: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    """The gateway worker (support.dpdk_gw_job) on the region tmp_path/r.shm, with local addresses 10.1.0.1 and
    192.0.2.1, net_pcap0 (clear) reading the frames clear_in and net_pcap1 (protected) prot_in; job adds
    the rest.  Its result, and the captures by name: cin, cout, pin, pout."""
    files = {k: tmp_path / f"{k}.pcap" for k in ("cin", "cout", "pin", "pout")}
    wrpcap(str(files["cin"]), clear_in)
    wrpcap(str(files["pin"]), prot_in)
    res = run_job("support.dpdk_gw_job", {
        "region": str(tmp_path / "r.shm"), "clear": "net_pcap0", "protected": "net_pcap1",
        "vdevs": [f"net_pcap0,rx_pcap={files['cin']},tx_pcap={files['cout']}",
                  f"net_pcap1,rx_pcap={files['pin']},tx_pcap={files['pout']}"],
        "local": ["10.1.0.1", "192.0.2.1"], **job})
    return res, files


@pytest.mark.parametrize(("enc", "integ"), ALGS, ids=[f"{e}-{i}" if i else e for e, i in ALGS])
def test_loop_outbound_decrypts_with_reference_and_scapy(tmp_path, enc, integ):
    sa = make_sa(enc, integ, seq=5)
    inner = inner_packets(70)
    res, esp = run_loop(tmp_path, "out", sa, inner)
    assert res["tx"] == len(inner) and not res["drops"] and res["sas"][0]["seq"] == 5 + len(inner)
    assert len(esp) == len(inner)

    st, got = run_engine(create("reference", capacity=1), sa, "in", esp)
    assert st == [Status.OK] * len(esp)
    assert got == inner

    if not enc.startswith("aes-cbc"):   # deterministic IVs: byte-identical to the software engine's output
        assert run_engine(create("reference", capacity=1), sa, "out", inner)[1] == esp

    ssa = scapy_sa(sa, seq=sa.seq, tunnel=True)
    for pkt, want in list(zip(esp, inner, strict=True))[:12]:
        assert bytes(ssa.decrypt(IP(pkt))) == want


@pytest.mark.parametrize(("enc", "integ"), ALGS, ids=[f"{e}-{i}" if i else e for e, i in ALGS])
def test_loop_inbound_matches_software_engine(tmp_path, enc, integ):
    sa = make_sa(enc, integ)
    inner = inner_packets(60)
    _, esp = run_engine(create("reference", capacity=1), sa, "out", inner)
    # Replays (a duplicate in the same burst and one in a later burst), a forged ICV on a sequence
    # number not seen yet (its genuine packet later must still pass: a failed ICV leaves the
    # window alone), an old packet, and a packet for an unknown SPI.
    forged = bytearray(esp[40])
    forged[-1] ^= 1
    unknown = bytearray(esp[11])
    unknown[20:24] = b"\x00\x00\x99\x99"
    stream = esp[:30] + [esp[3], bytes(forged), esp[29]] + esp[30:] + [esp[0], bytes(unknown)]

    res, out = run_loop(tmp_path, "in", sa, stream, burst=16)

    ref = create("reference", capacity=1)
    st, got = run_engine(ref, sa, "in", stream)
    want = [p for s, p in zip(st, got, strict=True) if s == Status.OK]
    assert out == want and want == inner
    s, rs = res["sas"][0], ref.stats(0)
    assert s["packets"] == rs.packets and s["bytes"] == rs.bytes and s["seq"] == rs.seq
    assert s["drops"] == {d.name: n for d, n in rs.drops.items()}
    assert s["drops"] == {"REPLAY": 3, "AUTH_FAILED": 1}
    assert res["engine_drops"] == {d.name: n for d, n in ref.engine_drops().items()} == {"NO_SA": 1}
    assert res["drops"] == {"REPLAY": 3, "AUTH_FAILED": 1, "NO_SA": 1}


def test_loop_inbound_anti_replay_window(tmp_path):
    """A window of 32: packets older than the window are dropped, newer out-of-order ones accepted."""
    sa = make_sa("aes-gcm-128", None, replay_window=32)
    inner = inner_packets(100)
    _, esp = run_engine(create("reference", capacity=1), sa, "out", inner)
    order = list(range(60, 100)) + [20, 70, 69, 68, 65, 61, 59, 90]   # seq = index + 1
    stream = [esp[i] for i in order]
    res, out = run_loop(tmp_path, "in", sa, stream)
    ref = create("reference", capacity=1)
    st, got = run_engine(ref, sa, "in", stream)
    assert out == [p for s, p in zip(st, got, strict=True) if s == Status.OK]
    assert res["sas"][0]["drops"] == {d.name: n for d, n in ref.stats(0).drops.items()}
    assert res["sas"][0]["drops"]["REPLAY"] >= 5


def test_loop_non_ip_frames_are_counted_and_dropped(tmp_path):
    sa = make_sa("aes-gcm-128", None)
    rx, tx = tmp_path / "rx.pcap", tmp_path / "tx.pcap"
    frames = [Ether(**MACS, type=0x0806) / Raw(b"\x00" * 28)] + \
             [Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"hi")]
    wrpcap(str(rx), frames)
    res = run_job("support.dpdk_loop_job", {
        "vdevs": [f"net_pcap0,rx_pcap={rx},tx_pcap={tx}"], "rx": "net_pcap0", "tx": "net_pcap0",
        "direction": "out", "sas": [[sa_to_json(sa), "out"]], "packets": 2, "seconds": 20, "memory_mb": 256})
    assert res["not_ip"] == 1 and res["tx"] == 1
    assert len(read_ip(tx)) == 1


# -- the gateway worker (cdefs/dpdk/dpdk_gw.c) on net_pcap, with a real region --------------------------------

PCAP_MAC = ["02:70:63:61:70:00", "02:70:63:61:70:01"]   # DPDK 22.11's net_pcap: "pcap" + port (checked below)
HOST_A, PEER, ROUTER = "02:00:00:00:0a:02", "02:00:00:00:0b:02", "02:00:00:00:0c:01"


def test_gateway_worker_spd_verdicts_esp_and_counters(tmp_path):
    """Every verdict of the worker, against a region control wrote: PROTECT (ESP that the reference engine
    decrypts back to the packet without its Ethernet padding), BYPASS, DISCARD, no policy, ACQUIRE (event
    posted, packet held), ICMP fragmentation-needed for a DF packet too big for the tunnel, frames left to
    the kernel; inbound ESP decrypted to the clear port (and counted, not sent, when it is for the gateway
    itself); an unknown SPI dropped; Ethernet rewritten from
    the neighbour table; the outbound sequence reservation written to the region."""
    from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy
    from fastpath.shm import Capacities

    out_sa = make_sa("aes-gcm-128", None, seq=1)
    in_sa = SA(spi=0x7007, src=ipaddress.ip_address("192.0.2.2"), dst=ipaddress.ip_address("192.0.2.1"),
               enc="aes-gcm-128", enc_key=bytes(range(20)))
    ctl = ControlRegion.create(tmp_path / "r.shm", Capacities(n_sa=16, n_spd=16, cmd_ring=64, evt_ring=64))
    try:
        so = ctl.install_sa(out_sa, "out").slot
        ctl.install_sa(in_sa, "in")
        ctl.add_policy(Policy(src="10.1.0.0/24", dst="10.2.0.0/24", action=PROTECT), (so,), commit=False)
        ctl.add_policy(Policy(src="10.1.0.0/24", dst="10.9.0.0/24", action=BYPASS), commit=False)
        ctl.add_policy(Policy(src="10.1.0.0/24", dst="10.8.0.0/24", action=DISCARD), commit=False)
        ctl.add_policy(Policy(src="10.1.0.0/24", dst="10.6.0.0/24", action=PROTECT), commit=False)   # ACQUIRE
        ctl.commit_policies()

        def clear(dst: str, size: int = 40, df: bool = False, mac: str = PCAP_MAC[0]):
            return Ether(src=HOST_A, dst=mac) / IP(src="10.1.0.2", dst=dst, flags="DF" if df else 0) / \
                UDP(sport=1000, dport=2000) / Raw(b"x" * size)

        small = Ether(src=HOST_A, dst=PCAP_MAC[0]) / IP(src="10.1.0.2", dst="10.2.0.2") / UDP(sport=7, dport=7)
        clear_in = [clear("10.2.0.2"), clear("10.9.0.5"), clear("10.8.0.5"), clear("10.7.0.5"), clear("10.6.0.5"),
                    clear("10.2.0.2", mac="02:00:00:00:00:99"), Ether(src=HOST_A, dst="ff:ff:ff:ff:ff:ff", type=0x0806)
                    / Raw(b"\0" * 28), clear("10.1.0.1"), clear("10.2.0.2", size=1472, df=True),
                    Ether(bytes(small) + b"\0" * (60 - len(small)))]   # Ethernet padding after the IP packet
        inner = bytes(IP(src="10.2.0.2", dst="10.1.0.2") / UDP(sport=2000, dport=1000) / Raw(b"reply"))
        to_gw = bytes(IP(src="10.2.0.2", dst="10.1.0.1") / UDP(sport=2000, dport=1000) / Raw(b"for the gateway"))
        _, (esp_in, bad, esp_gw) = run_engine(create("reference", capacity=1), in_sa, "out", [inner, inner, to_gw])
        bad = bad[:20] + b"\x00\x00\x66\x66" + bad[24:]
        eth = Ether(src=PEER, dst=PCAP_MAC[1], type=0x0800)
        prot_in = [eth / Raw(esp_in), eth / Raw(bad),
                   Ether(src=PEER, dst=PCAP_MAC[1]) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=500, dport=500)
                   / Raw(b"ike"),
                   eth / Raw(esp_in[:16] + bytes([192, 0, 2, 77]) + esp_in[20:]), eth / Raw(esp_gw)]
        res, files = run_gw_job(tmp_path, clear_in, prot_in, icmp_src4="10.1.0.1", seconds=0.5,
                                neighbours={"10.1.0.2": HOST_A, "192.0.2.2": PEER, "10.9.0.5": ROUTER})
        assert list(res["macs"].values()) == PCAP_MAC
        st = res["stats"]
        assert (st["rx_clear"], st["rx_prot"]) == (len(clear_in), len(prot_in))
        assert (st["protect"], st["bypass"], st["discard"], st["no_policy"], st["icmp"], st["decrypted"]) == \
            (2, 1, 1, 1, 1, 1)
        assert (st["acquires"], st["held"], st["kernel"], st["esp_drop"], st["local_in"]) == (1, 1, 5, 1, 1)
        assert st["esp_drops"] == {"no-sa": 1} and res["misses"] == []
        acq = [e for e in ctl.events() if e.kind == "acquire"]
        assert len(acq) == 1 and (acq[0].src, acq[0].dst, acq[0].proto) == ("10.1.0.2", "10.6.0.5", 17)
        ctr = ctl.counters(so)
        assert ctr.stats.packets == 2 and ctr.seq_reserved >= 3 + (1 << 16)

        pout = [bytes(f) for f in rdpcap(str(files["pout"]))]
        # a burst's BYPASS frames leave as they are classified, its ESP after the batch (flows keep their order)
        assert [f[:12] for f in pout] == [bytes(Ether(dst=m, src=PCAP_MAC[1]))[:12] for m in (ROUTER, PEER, PEER)]
        st, got = run_engine(create("reference", capacity=1), out_sa, "in", [pout[1][14:], pout[2][14:]])
        assert st == [Status.OK] * 2
        assert got == [bytes(clear_in[0][IP]), bytes(small[IP])]
        assert pout[0][14:] == bytes(clear_in[1][IP])               # bypass: forwarded unchanged

        cout = [Ether(bytes(f)) for f in rdpcap(str(files["cout"]))]
        assert [(f.src, f.dst) for f in cout] == [(PCAP_MAC[0], HOST_A)] * 2
        icmp, dec = cout
        assert bytes(dec[IP]) == inner
        ic = icmp[IP]
        assert (ic.src, ic.dst, ic.proto, bytes(ic.payload)[:2]) == ("10.1.0.1", "10.1.0.2", 1, b"\x03\x04")
        mtu = int.from_bytes(bytes(ic.payload)[6:8], "big")
        ovh, blk = 20 + 8 + 8 + 16, 4       # outer IPv4, ESP header, IV, ICV; GCM pads to 4
        assert ovh + (mtu + 2 + blk - 1) // blk * blk <= 1500 < ovh + (mtu + 1 + 2 + blk - 1) // blk * blk + blk
        assert IP(bytes(ic.payload)[8:]).dst == "10.2.0.2"          # quotes the packet that did not fit
    finally:
        ctl.close()


def test_gateway_worker_expiry_events_and_hard_expired_sa_stops(tmp_path):
    """CHILD SAs driven to their soft and hard limits through the worker (outbound by packets, inbound by
    bytes): SOFT_EXPIRE and HARD_EXPIRE reach the region's event ring from the worker's publish, exactly the
    packets within the hard limit pass, and after the hard expiry has taken the SA out of the engine its
    packets are dropped and counted as hard-expired, not held waiting for an SA (nor decrypted)."""
    from cdefs.sa import Lifetime
    from control.shm import PROTECT, ControlRegion, Policy
    from fastpath.shm import Capacities
    from fastpath.status import SAFlag

    out_sa = make_sa("aes-gcm-128", None, seq=1, lifetime=Lifetime(soft_packets=3, hard_packets=5))
    in_sa = SA(spi=0x7007, src=ipaddress.ip_address("192.0.2.2"), dst=ipaddress.ip_address("192.0.2.1"),
               enc="aes-gcm-128", enc_key=bytes(range(20)), lifetime=Lifetime(soft_bytes=250, hard_bytes=450))
    n = 24
    ctl = ControlRegion.create(tmp_path / "r.shm", Capacities(n_sa=16, n_spd=16, cmd_ring=64, evt_ring=64))
    try:
        so = ctl.install_sa(out_sa, "out").slot
        si = ctl.install_sa(in_sa, "in").slot
        ctl.add_policy(Policy(src="10.1.0.0/24", dst="10.2.0.0/24", action=PROTECT), (so,))
        clear_in = [Ether(src=HOST_A, dst=PCAP_MAC[0]) / IP(src="10.1.0.2", dst="10.2.0.2") /
                    UDP(sport=1000, dport=2000) / Raw(bytes([k]) * 40) for k in range(n)]
        inner = [bytes(IP(src="10.2.0.2", dst="10.1.0.2") / UDP(sport=2000, dport=1000) / Raw(bytes([k]) * 72))
                 for k in range(n)]       # 100 bytes each: the 5th crosses hard_bytes
        # the peer's SA has no limit here
        st, esp = run_engine(create("reference", capacity=1), dataclasses.replace(in_sa, lifetime=Lifetime()), "out",
                             inner)
        assert st == [Status.OK] * n
        prot_in = [Ether(src=PEER, dst=PCAP_MAC[1], type=0x0800) / Raw(p) for p in esp]
        # burst 1 and zero-length slices: a slice takes 16 frames per port, so the SAs expire in the first
        # slice, the publish after it removes them, and the second slice's frames find them gone
        res, files = run_gw_job(tmp_path, clear_in, prot_in, neighbours={"10.1.0.2": HOST_A, "192.0.2.2": PEER},
                                seconds=0.3, burst=1, slice=0, publish_each_slice=True)
        st = res["stats"]
        assert (st["rx_clear"], st["rx_prot"]) == (n, n)
        assert (st["protect"], st["decrypted"], st["held"]) == (5, 4, 0)
        assert st["esp_drops"] == {"hard-expired": (n - 5) + (n - 4)}, st
        assert res["events_posted"] == 4 and so not in res["engine_sas"] and si not in res["engine_sas"]
        # the region's counters stop where the SA left the engine; the worker counted the rest
        for slot, packets, nbytes in ((so, 5, None), (si, 4, 400)):
            ctr = ctl.counters(slot)
            assert ctr.stats.packets == packets and ctr.stats.flags & SAFlag.HARD_EXPIRED
            assert nbytes is None or ctr.stats.bytes == nbytes
        late = st["esp_drops"]["hard-expired"] - sum(ctl.counters(s).stats.drops.get(Status.HARD_EXPIRED, 0)
                                                     for s in (so, si))
        assert late > 0          # dropped after the SA had left the engine, as hard-expired
        evs = [(e.kind, e.slot, e.packets) for e in ctl.events()]
        assert sorted(evs) == sorted([("soft-expire", so, 5), ("hard-expire", so, 5),
                                      ("soft-expire", si, 4), ("hard-expire", si, 4)])
        assert len(rdpcap(str(files["pout"]))) == 5 and len(rdpcap(str(files["cout"]))) == 4
    finally:
        ctl.close()
