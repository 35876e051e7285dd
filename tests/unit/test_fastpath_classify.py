"""kio_classify (C) against the plain-Python statement of the rules (support.classify_model), on a
real region with a random SPD; ACQUIRE events and their rate limit; ICMP fragmentation-needed / Packet Too
Big built in place and checked with scapy."""

from __future__ import annotations

import ipaddress
import random
import struct

import numpy as np
import pytest
from support.sa import make_sa

from cdefs.sa import Direction
from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror  # noqa: E402
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop  # noqa: E402
from support.classify_model import classify_model  # noqa: E402

from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy  # noqa: E402
from fastpath.classify import Classifier, esp_overhead, inner_mtu  # noqa: E402
from fastpath.shm import Capacities, FastpathRegion  # noqa: E402


@pytest.fixture
def regions(tmp_path):
    ctl = ControlRegion.create(tmp_path / "r.shm", Capacities(n_sa=64, n_spd=256, cmd_ring=256, evt_ring=256))
    fp = FastpathRegion.attach(tmp_path / "r.shm")
    yield ctl, fp
    fp.close()
    ctl.close()


def _rand_prefix(rng: random.Random, v6: bool) -> str:
    if v6:
        plen = rng.choice([16, 32, 48, 64, 96, 128])
        a = ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(16) << 80 | rng.getrandbits(8))
        return str(ipaddress.IPv6Network(f"{a}/{plen}", strict=False))
    plen = rng.choice([8, 16, 20, 24, 28, 32])
    a = ipaddress.IPv4Address(10 << 24 | rng.getrandbits(4) << 16 | rng.getrandbits(3) << 8 | rng.getrandbits(3))
    return str(ipaddress.IPv4Network(f"{a}/{plen}", strict=False))


def _rand_packet(rng: random.Random) -> bytes:
    v6 = rng.random() < 0.3
    if v6:
        src = str(ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(16) << 80 | rng.getrandbits(8)))
        dst = str(ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(16) << 80 | rng.getrandbits(8)))
        ip = IPv6(src=src, dst=dst)
        if rng.random() < 0.2:
            ip = ip / IPv6ExtHdrHopByHop()
        if rng.random() < 0.1:
            ip = ip / IPv6ExtHdrFragment(offset=rng.choice([0, 8]))
    else:
        src = str(ipaddress.IPv4Address(10 << 24 | rng.getrandbits(4) << 16 | rng.getrandbits(3) << 8 |
                                        rng.getrandbits(3)))
        dst = str(ipaddress.IPv4Address(10 << 24 | rng.getrandbits(4) << 16 | rng.getrandbits(3) << 8 |
                                        rng.getrandbits(3)))
        ip = IP(src=src, dst=dst, frag=rng.choice([0, 0, 0, 5]))
    kind = rng.random()
    if kind < 0.4:
        l4 = TCP(sport=rng.choice([80, 443, 1234, 5000]), dport=rng.choice([80, 443, 22, 5001]))
    elif kind < 0.8:
        l4 = UDP(sport=rng.choice([53, 500, 4500, 1234, 5000]), dport=rng.choice([53, 500, 4500, 5001, 6000]))
    else:
        l4 = ICMP() if not v6 else UDP(sport=1, dport=2)
    if rng.random() < 0.05:
        ip.dst = "172.16.0.1" if not v6 else "fd00::1"   # outside every policy
    raw = bytes(ip / l4 / bytes(rng.randrange(0, 40)))
    if rng.random() < 0.05:
        raw = raw[: rng.randrange(0, 20)]             # truncated: malformed
    return raw


def test_classify_matches_python_model(regions) -> None:
    ctl, fp = regions
    rng = random.Random(4301)
    slots = [ctl.install_sa(make_sa("aes-gcm-128", rng=rng), Direction.OUT).slot for _ in range(8)]
    for _ in range(150):
        v6 = rng.random() < 0.3
        action = rng.choice([PROTECT, PROTECT, BYPASS, DISCARD])
        proto = rng.choice([0, 0, 6, 17])
        ports = (0, 65535)
        if proto and rng.random() < 0.5:
            lo = rng.choice([0, 80, 443, 5000])
            ports = (lo, lo + rng.choice([0, 0, 100]))
        sas = (rng.choice(slots),) if action == PROTECT and rng.random() < 0.7 else ()
        ctl.add_policy(Policy(_rand_prefix(rng, v6), _rand_prefix(rng, v6), proto, (0, 65535), ports, action,
                              rng.randrange(1, 5000)), sas, commit=False)
    ctl.commit_policies()
    cls = Classifier(fp, outer_mtu=0)
    b = Batch(256, mtu=1500)
    kb = kio.KBatch(b)
    verdict = np.zeros(256, dtype=np.uint8)
    seen = set()
    for _ in range(8):
        b.clear()
        pkts = [_rand_packet(rng) for _ in range(256)]
        for p in pkts:
            b.append(p)
        protect = cls.classify(kb, b.n, verdict, acquire=False)
        assert protect == int(np.count_nonzero(verdict[: b.n] == kio.V_PROTECT))
        for i, p in enumerate(pkts):
            want = classify_model(fp, p)
            assert (int(verdict[i]), int(b.sa[i])) == want, (i, p.hex())
            seen.add(want[0])
    assert {kio.V_PROTECT, kio.V_BYPASS, kio.V_DISCARD, kio.V_ACQUIRE, kio.V_NO_POLICY, kio.V_MALFORMED} <= seen


def test_acquire_posted_once_per_policy_interval(regions) -> None:
    ctl, fp = regions
    ctl.add_policy(Policy("10.1.0.0/24", "10.2.0.0/24", action=PROTECT, priority=100))
    cls = Classifier(fp)
    b = Batch(32, mtu=1500)
    kb = kio.KBatch(b)
    verdict = np.zeros(32, dtype=np.uint8)
    for i in range(20):
        b.append(bytes(IP(src="10.1.0.5", dst=f"10.2.0.{i + 1}") / ICMP()))
    cls.classify(kb, b.n, verdict)
    assert (verdict[:20] == kio.V_ACQUIRE).all() and (b.sa[:20] == kio.NO_SA).all()
    assert cls.acquires == 1                           # the region rate-limits per policy
    events = [e for e in ctl.events() if e.kind == "acquire"]
    assert len(events) == 1 and (events[0].src, events[0].dst) == ("10.1.0.5", "10.2.0.1")
    # IKE never goes to the SPD, even when a policy would match it
    b.clear()
    b.append(bytes(IP(src="10.1.0.5", dst="10.2.0.9") / UDP(sport=500, dport=500) / b"x"))
    cls.classify(kb, 1, verdict)
    assert verdict[0] == kio.V_BYPASS


def _one(cls, kb, b, pkt: bytes, verdict) -> bytes:
    b.clear()
    b.append(pkt)
    cls.classify(kb, 1, verdict)
    return b.packet(0)


def test_too_big_gets_icmp_with_the_inner_mtu(regions) -> None:
    ctl, fp = regions
    sa = make_sa("aes-gcm-128", udp_encap=True)
    slot = ctl.install_sa(sa, Direction.OUT).slot
    ctl.add_policy(Policy("10.1.0.0/16", "10.2.0.0/16", action=PROTECT, priority=10), (slot,), commit=False)
    ctl.add_policy(Policy("fd00:1::/64", "fd00:2::/64", action=PROTECT, priority=10), (slot,))
    fp.sync(__import__("fastpath.engines", fromlist=["create"]).create("reference", capacity=64))
    cls = Classifier(fp, outer_mtu=1500, icmp_src4="10.1.0.1")
    cls.set_sa(slot, sa)
    ovh, blk = esp_overhead(sa)
    assert (ovh, blk) == (20 + 8 + 8 + 8 + 16, 4)
    mtu = inner_mtu(1500, ovh, blk)
    b = Batch(4, mtu=1600)
    kb = kio.KBatch(b)
    verdict = np.zeros(4, dtype=np.uint8)

    def v4(total: int, df: bool) -> bytes:
        p = IP(src="10.1.0.5", dst="10.2.0.7", flags="DF" if df else 0) / UDP(sport=1, dport=2)
        return bytes(p / bytes(total - 28))

    assert _one(cls, kb, b, v4(mtu, True), verdict) and verdict[0] == kio.V_PROTECT and b.sa[0] == slot
    orig = v4(mtu + 1, True)
    out = IP(_one(cls, kb, b, orig, verdict))
    assert verdict[0] == kio.V_ICMP
    assert out.src == "10.1.0.1" and out.dst == "10.1.0.5"
    assert out[ICMP].type == 3 and out[ICMP].code == 4 and out[ICMP].nexthopmtu == mtu
    assert bytes(out[IPerror])[:28] == orig[:28]
    chk = out.copy()
    del chk.chksum
    del chk[ICMP].chksum
    rebuilt = IP(bytes(chk))
    assert rebuilt.chksum == out.chksum and rebuilt[ICMP].chksum == out[ICMP].chksum
    _one(cls, kb, b, v4(mtu + 1, False), verdict)
    assert verdict[0] == kio.V_TOO_BIG                 # no DF: dropped, outer fragmentation avoided

    orig6 = bytes(IPv6(src="fd00:1::5", dst="fd00:2::7") / UDP(sport=1, dport=2) / bytes(mtu + 1 - 48))
    out6 = IPv6(_one(cls, kb, b, orig6, verdict))
    assert verdict[0] == kio.V_ICMP
    ptb = out6[ICMPv6PacketTooBig]
    assert out6.dst == "fd00:1::5" and out6.src == "fd00:2::7" and ptb.mtu == mtu
    chk6 = out6.copy()
    del chk6[ICMPv6PacketTooBig].cksum
    assert IPv6(bytes(chk6))[ICMPv6PacketTooBig].cksum == ptb.cksum
    assert len(bytes(out6)) <= 1280 and bytes(out6)[48:48 + 40] == orig6[:40]
    assert struct.unpack("!H", bytes(out6)[4:6])[0] == len(bytes(out6)) - 40


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("integ", ["hmac-sha1-96", "hmac-sha256-128", "hmac-sha384-192", "hmac-sha512-256"])
def test_ah_overhead_is_what_scapys_ah_adds(integ: str, family: int) -> None:
    # the classifier's MTU check must know AH's size, not ESP's: scapy's AH in tunnel mode says what it is
    from scapy.layers.inet6 import IPv6
    from support.ah import make_ah_sa, scapy_ah_sa

    sa = make_ah_sa(integ, family=family)
    inner = (IP(src="10.1.0.5", dst="10.2.0.7") if family == 4 else IPv6(src="fd00:1::5", dst="fd00:2::7")) / \
        UDP(sport=1, dport=2) / bytes(333)
    ovh, blk = esp_overhead(sa)
    assert blk == 1
    assert ovh == len(bytes(scapy_ah_sa(sa).encrypt(inner))) - len(bytes(inner))
