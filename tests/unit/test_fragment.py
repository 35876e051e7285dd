"""Inner IPv4 fragmentation before ESP (cdefs/kio/kio_frag.c, RFC 4459 3. / RFC 4301 8.): a too-big packet without DF
is cut into RFC 791 fragments, each encrypted as its own ESP packet that fits the outer MTU.  Checked against
code we did not write: scapy decrypts every ESP packet and scapy's ``defragment`` reassembles the original.
DF packets still get ICMP fragmentation-needed and IPv6 still gets Packet Too Big (never fragmented here).

The end-to-end half (a 3000-byte datagram through a gateway pair, reassembled by the receiving host's
kernel) is in tests/e2e/test_gateway_counters.py, which also checks the counters it moves."""

from __future__ import annotations

import numpy as np
import pytest
from support.sa import make_sa, scapy_sa

from cdefs.sa import SA, Direction
from fastpath import engines
from fastpath.batch import Batch

kio = pytest.importorskip("fastpath.io.kio")
if kio.lib is None:
    pytest.skip(f"fastpath._kio not built: {kio.IMPORT_ERROR}", allow_module_level=True)

from scapy.layers.inet import ICMP, IP, UDP, IPOption, defragment  # noqa: E402
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6  # noqa: E402

from control.shm import PROTECT, ControlRegion, Policy  # noqa: E402
from fastpath.classify import Classifier, esp_overhead, inner_mtu  # noqa: E402
from fastpath.shm import Capacities, FastpathRegion  # noqa: E402

OUTER_MTU = 1500


class Rig:
    """A region with one outbound AES-GCM SA and policies for 10.1/16 -> 10.2/16 and fd00:1::/64 -> fd00:2::/64,
    a classifier that fragments, and the best C engine."""

    def __init__(self, tmp_path, udp_encap: bool = False, frag_capacity: int = 64):
        self.ctl = ControlRegion.create(tmp_path / "f.shm", Capacities(n_sa=16, n_spd=64, cmd_ring=64, evt_ring=64))
        self.fp = FastpathRegion.attach(tmp_path / "f.shm")
        self.sa = make_sa("aes-gcm-128", udp_encap=udp_encap)
        self.slot = self.ctl.install_sa(self.sa, Direction.OUT).slot
        self.ctl.add_policy(Policy("10.1.0.0/16", "10.2.0.0/16", action=PROTECT, priority=10), (self.slot,),
                            commit=False)
        self.ctl.add_policy(Policy("fd00:1::/64", "fd00:2::/64", action=PROTECT, priority=10), (self.slot,))
        self.engine = engines.create("best", capacity=16)
        self.fp.sync(self.engine)
        self.cls = Classifier(self.fp, outer_mtu=OUTER_MTU, icmp_src4="10.1.0.1", fragment=True)
        self.cls.set_sa(self.slot, self.sa)
        self.mtu = inner_mtu(OUTER_MTU, *esp_overhead(self.sa))
        self.b = Batch(16, mtu=9000)
        self.kb = kio.KBatch(self.b)
        self.frags = Batch(frag_capacity, mtu=OUTER_MTU)
        self.kf = kio.KBatch(self.frags)
        self.verdict = np.zeros(16, dtype=np.uint8)

    def close(self) -> None:
        self.engine.close()
        self.fp.close()
        self.ctl.close()

    def classify(self, packets: list[bytes]) -> np.ndarray:
        self.b.clear()
        self.b.extend(packets)
        self.cls.classify(self.kb, self.b.n, self.verdict)
        return self.verdict[:self.b.n]

    def fragment_and_encrypt(self) -> list[bytes]:
        """What the fastpath does: fragments of every TOO_BIG packet, encrypted, dst emptied between calls."""
        out, cursor, n = [], 0, self.b.n
        while cursor < n:
            m, cursor = self.cls.fragment(self.kb, n, self.verdict, self.kf, cursor)
            if m:
                self.fp.reserve_batch(self.frags.sa, m)
                self.engine.outbound(self.frags)
                assert (self.frags.status[:m] == 0).all()
                out.extend(self.frags.packet(i) for i in range(m))
        return out


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def _decrypt(sa: SA, esp: list[bytes]) -> list[IP]:
    ssa = scapy_sa(sa, tunnel=True)
    return [IP(bytes(ssa.decrypt(IP(p)))) for p in esp]


def _header_ok(f: IP) -> bool:
    chk = f.copy()
    del chk.chksum
    return IP(bytes(chk)).chksum == f.chksum


def _udp(size: int, *, df: bool = False, options=(), src: str = "10.1.0.5", ident: int = 0x4242, frag: int = 0,
         mf: bool = False) -> bytes:
    flags = (2 if df else 0) | (1 if mf else 0)      # DF, MF
    ip = IP(src=src, dst="10.2.0.7", id=ident, flags=flags, frag=frag, options=list(options), ttl=33, tos=0x28)
    hdr = len(bytes(ip / UDP()))
    payload = bytes((i * 7) & 0xFF for i in range(size - hdr))
    return bytes(ip / UDP(sport=4000, dport=5000) / payload)


def test_non_df_packet_fragmented_before_esp_and_reassembled_by_scapy(rig) -> None:
    # Router Alert is copied into every fragment (copied flag set), Record Route only into the first (RFC 791)
    opts = [IPOption(b"\x94\x04\x00\x00"), IPOption(b"\x01"), IPOption(b"\x07\x07\x04" + bytes(4))]
    orig = _udp(3000, options=opts)
    assert len(orig) == 3000 and (orig[0] & 15) * 4 == 32
    v = rig.classify([orig])
    assert v[0] == kio.V_TOO_BIG and rig.b.sa[0] == rig.slot      # kept for the fragmenter
    esp = rig.fragment_and_encrypt()
    assert v[0] == kio.V_FRAGMENTED and rig.b.sa[0] == kio.NO_SA
    assert len(esp) == 3
    assert all(len(p) <= OUTER_MTU for p in esp)                  # the outer packet never fragments
    assert max(len(p) for p in esp[:-1]) > OUTER_MTU - 40          # ... and the pieces are not needlessly small
    frags = _decrypt(rig.sa, esp)
    assert all(_header_ok(f) for f in frags)
    assert [f.flags.MF for f in frags] == [1, 1, 0] and not any(f.flags.DF for f in frags)
    assert {f.id for f in frags} == {0x4242} and {(f.ttl, f.tos, f.proto) for f in frags} == {(33, 0x28, 17)}
    pos = 0
    for f in frags:
        assert f.frag * 8 == pos
        data = bytes(f.payload)
        assert f.flags.MF == 0 or len(data) % 8 == 0
        assert len(bytes(f)) <= rig.mtu
        pos += len(data)
    assert pos == 3000 - 32
    assert bytes(frags[0])[20:32] == orig[20:32]                  # first fragment: every option
    for f in frags[1:]:
        assert f.ihl == 6 and bytes(f)[20:24] == b"\x94\x04\x00\x00"   # later ones: Router Alert only
    whole = defragment(frags)
    assert len(whole) == 1
    got = whole[0]
    assert bytes(got[UDP]) == bytes(IP(orig)[UDP])
    assert (got.src, got.dst, got.id) == ("10.1.0.5", "10.2.0.7", 0x4242)


def test_a_fragment_is_fragmented_again(rig) -> None:
    # a middle fragment (offset 1480, MF) of some bigger datagram: the pieces keep MF and continue its offsets
    orig = _udp(2000, frag=185, mf=True)
    rig.classify([orig])
    frags = _decrypt(rig.sa, rig.fragment_and_encrypt())
    assert len(frags) == 2 and all(f.flags.MF for f in frags)
    assert frags[0].frag == 185 and frags[1].frag == 185 + len(bytes(frags[0].payload)) // 8
    assert b"".join(bytes(f.payload) for f in frags) == orig[20:]


def test_df_and_ipv6_still_get_icmp_and_small_packets_pass(rig) -> None:
    big_df = _udp(3000, df=True)
    big6 = bytes(IPv6(src="fd00:1::5", dst="fd00:2::7") / UDP(sport=1, dport=2) / bytes(3000 - 48))
    small = _udp(rig.mtu)
    v = rig.classify([big_df, big6, small])
    assert list(v) == [kio.V_ICMP, kio.V_ICMP, kio.V_PROTECT]
    assert rig.fragment_and_encrypt() == []
    assert list(v) == [kio.V_ICMP, kio.V_ICMP, kio.V_PROTECT] and rig.b.sa[2] == rig.slot
    icmp = IP(rig.b.packet(0))
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 4 and icmp[ICMP].nexthopmtu == rig.mtu
    assert IPv6(rig.b.packet(1))[ICMPv6PacketTooBig].mtu == rig.mtu


def test_without_the_option_too_big_is_dropped(rig) -> None:
    rig.cls.c.fragment = 0
    v = rig.classify([_udp(3000)])
    assert v[0] == kio.V_TOO_BIG and rig.b.sa[0] == kio.NO_SA
    assert rig.fragment_and_encrypt() == []


def test_bad_options_are_dropped_not_cut(rig) -> None:
    bad = bytearray(_udp(3000, options=[IPOption(b"\x94\x04\x00\x00")]))
    bad[21] = 9                                   # option length past the header (the classifier reads no options)
    rig.classify([bytes(bad)])
    assert rig.fragment_and_encrypt() == []
    assert rig.verdict[0] == kio.V_TOO_BIG and rig.b.sa[0] == kio.NO_SA


def test_many_packets_through_a_small_fragment_batch(tmp_path) -> None:
    r = Rig(tmp_path, udp_encap=True, frag_capacity=7)      # 4 pieces per packet: one packet per call at most
    try:
        pkts = [_udp(4000 + 97 * i, ident=100 + i) for i in range(6)] + [_udp(100, ident=99)]
        v = r.classify(pkts)
        assert list(v[:6]) == [kio.V_TOO_BIG] * 6 and v[6] == kio.V_PROTECT
        esp = r.fragment_and_encrypt()
        assert list(v[:6]) == [kio.V_FRAGMENTED] * 6
        assert all(len(p) <= OUTER_MTU for p in esp)
        whole = defragment(_decrypt(r.sa, esp))
        assert sorted(p.id for p in whole) == list(range(100, 106))
        for p in whole:
            assert bytes(p[UDP]) == bytes(IP(pkts[p.id - 100])[UDP])
    finally:
        r.close()
