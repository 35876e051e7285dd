"""The reference engine against scapy's independent ESP, plus docs/esp.md behaviours.

A focused smoke set: the full engine x algorithm matrix lives elsewhere.
"""

from __future__ import annotations

import os
import struct
from functools import partial

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.ipsec import ESP, SecurityAssociation, _ESPPlain
from scapy.packet import Raw
from support.sa import make_sa as build_sa
from support.sa import scapy_sa

from cdefs.sa import SA, Direction, Lifetime, Mode, TrafficSelector
from fastpath.batch import Batch
from fastpath.engines import create, discover
from fastpath.engines.base import EngineError
from fastpath.engines.reference import ReferenceEngine
from fastpath.status import SAFlag, Status

OUT_V4 = ("10.0.0.1", "10.0.0.2")
OUT_V6 = ("2001:db8::1", "2001:db8::2")
make_sa = partial(build_sa, spi=0x1000_0001, src=OUT_V4[0], dst=OUT_V4[1])

def scapy_encrypt(ssa: SecurityAssociation, pkt, seq_lo: int):
    # scapy reads seq_num=0 as "use the SA counter", so set the counter instead.
    ssa.seq_num = seq_lo
    return ssa.encrypt(pkt)


def outbound(engine, packets, index=0, batch=None):
    b = batch if batch is not None else Batch(capacity=max(len(packets), 1))
    for p in packets:
        b.append(bytes(p), sa=index)
    engine.outbound(b)
    return [(Status(int(s)), p) for s, p in b.results()]


def inbound(engine, packets):
    b = Batch(capacity=max(len(packets), 1))
    for p in packets:
        b.append(bytes(p))
    engine.inbound(b)
    return [(Status(int(s)), p, int(b.sa[i])) for i, (s, p) in enumerate(b.results())]


def pair(sa: SA):
    """An engine with the SA installed outbound at 0 and inbound at 1."""
    e = ReferenceEngine(capacity=8)
    e.add_sa(0, sa, Direction.OUT)
    e.add_sa(1, sa, Direction.IN)
    return e


def inner_v4(n: int = 0, **kw) -> bytes:
    return bytes(IP(src="192.168.1.10", dst="192.168.2.20", **kw) / TCP(sport=40000 + n, dport=443)
                 / Raw(bytes(range(n % 200))))


def inner_v6(n: int = 0, **kw) -> bytes:
    return bytes(IPv6(src="fd00:1::10", dst="fd00:2::20", **kw) / UDP(sport=5000, dport=53 + n) / Raw(b"q" * (n % 97)))


ALGS = [("aes-gcm-128", None), ("aes-gcm-256", None), ("aes-gmac-192", None), ("chacha20-poly1305", None),
        ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha512-256"), ("null", "hmac-sha384-192")]


# -- against scapy ----------------------------------------------------------------


@pytest.mark.parametrize("enc,integ", ALGS)
def test_outbound_decrypts_with_scapy(enc, integ):
    sa = make_sa(enc, integ)
    e = pair(sa)
    inners = [inner_v4(n) for n in range(0, 60, 7)] + [inner_v6(n) for n in (0, 1, 2, 3, 50)]
    results = outbound(e, inners)
    ssa = scapy_sa(sa)
    for (status, out), inner in zip(results, inners, strict=True):
        assert status == Status.OK
        assert len(out[20 + 8 + sa.enc_alg.iv_len:]) % 4 == 0     # RFC 4303 2.4 alignment
        assert bytes(ssa.decrypt(IP(out))) == inner
    st = e.stats(0)
    assert (st.packets, st.bytes, st.seq) == (len(inners), sum(map(len, inners)), len(inners) + 1)


@pytest.mark.parametrize("enc,integ", ALGS)
def test_inbound_accepts_scapy(enc, integ):
    sa = make_sa(enc, integ)
    e = pair(sa)
    ssa = scapy_sa(sa)
    inners = [inner_v4(n) for n in range(0, 40, 9)] + [inner_v6(3)]
    wire = [ssa.encrypt(IP(p) if p[0] >> 4 == 4 else IPv6(p), seq_num=i + 1) for i, p in enumerate(inners)]
    results = inbound(e, wire)
    assert [(s, p, i) for s, p, i in results] == [(Status.OK, p, 1) for p in inners]
    assert e.stats(1).seq == len(inners)


@pytest.mark.parametrize("enc", ["aes-gcm-256", "aes-gmac-128", "chacha20-poly1305"])
def test_aead_bytes_equal_scapy(enc):
    # The AEAD IV is the sequence number, so scapy given the same IV must
    # produce the same ESP bytes.
    sa = make_sa(enc, seq=7)
    e = pair(sa)
    inner = inner_v4(33)
    (status, out), = outbound(e, [inner])
    ref = bytes(scapy_sa(sa).encrypt(IP(inner), seq_num=7, iv=struct.pack("!Q", 7)))
    assert status == Status.OK and out[20:] == ref[20:]


@pytest.mark.parametrize("enc,integ", [("aes-gcm-128", None), ("aes-cbc-256", "hmac-sha256-128"),
                                       ("aes-gmac-256", None)])
def test_esn_across_the_epoch_boundary(enc, integ):
    start = 2**32 - 2
    sa = make_sa(enc, integ, esn=True, seq=start)
    e = pair(sa)
    inners = [inner_v4(n) for n in range(4)]
    results = outbound(e, inners)
    for n, ((status, out), inner) in enumerate(zip(results, inners, strict=True)):
        seq = start + n
        assert status == Status.OK
        assert struct.unpack_from("!I", out, 24)[0] == seq & 0xFFFFFFFF
        assert bytes(scapy_sa(sa, esn_hi=seq >> 32).decrypt(IP(out))) == inner
        if sa.enc_alg.aead:
            assert out[28:36] == struct.pack("!Q", seq)
    # Inbound: scapy-made packets on both sides of 2^32, delivered out of order.
    rx = make_sa(enc, integ, esn=True)
    e2 = ReferenceEngine()
    e2.add_sa(3, rx, Direction.IN)
    # The first packet jumps from 0 to just below 2^32 (any jump < 2^32 - W is inferable).
    seqs = [start - 100, start, start + 3, start + 1, start + 2, start + 3]
    wire = [scapy_encrypt(scapy_sa(rx, esn_hi=s >> 32), IP(inner_v4(s % 7)), s & 0xFFFFFFFF) for s in seqs]
    got = inbound(e2, wire)
    assert [s for s, _, _ in got] == [Status.OK] * 5 + [Status.REPLAY]
    assert [p for _, p, _ in got[:5]] == [inner_v4(s % 7) for s in seqs[:5]]
    assert e2.stats(3).seq == start + 3


@pytest.mark.parametrize("outer", [OUT_V4, OUT_V6])
def test_udp_encapsulated_tunnel(outer):
    sa = make_sa("aes-gcm-256", src=outer[0], dst=outer[1], udp_encap=True, sport=4500, dport=4500)
    e = pair(sa)
    ssa = scapy_sa(sa)
    outer_cls = IP if outer == OUT_V4 else IPv6
    inners = [inner_v4(5), inner_v6(9)]
    for (status, out), inner in zip(outbound(e, inners), inners, strict=True):
        assert status == Status.OK
        pkt = outer_cls(out)
        assert pkt[UDP].sport == pkt[UDP].dport == 4500
        if outer == OUT_V4:
            assert pkt[UDP].chksum == 0
        else:   # IPv6 needs a real UDP checksum: scapy's recomputation must agree
            assert pkt[UDP].chksum == IPv6(bytes(_zero_udp_checksum(pkt)))[UDP].chksum != 0
        assert bytes(ssa.decrypt(outer_cls(out))) == inner
    wire = [ssa.encrypt(IP(inners[0]), seq_num=1), ssa.encrypt(IPv6(inners[1]), seq_num=2)]
    assert [(s, p) for s, p, _ in inbound(e, wire)] == [(Status.OK, inners[0]), (Status.OK, inners[1])]


def _zero_udp_checksum(pkt):
    p = pkt.copy()
    del p[UDP].chksum
    return p


def test_transport_mode_v4_and_v6_with_scapy():
    def v6(encap: bool) -> bytes:
        # scapy's transport + NAT-T code drops IPv6 extension headers, so only
        # the plain-ESP case carries a Hop-by-Hop header.
        base = IPv6(src=OUT_V6[0], dst=OUT_V6[1])
        if not encap:
            base = base / IPv6ExtHdrHopByHop()
        return bytes(base / UDP(dport=53) / (b"x" * 13))

    for outer, mk, cls in ((OUT_V4, lambda _: bytes(IP(src=OUT_V4[0], dst=OUT_V4[1]) / TCP(dport=22) / b"hi"), IP),
                           (OUT_V6, v6, IPv6)):
        for encap in (False, True):
            sa = make_sa("aes-cbc-128", "hmac-sha256-128", src=outer[0], dst=outer[1], mode=Mode.TRANSPORT,
                         udp_encap=encap)
            e = pair(sa)
            ssa = scapy_sa(sa)
            pkt = mk(encap)
            (status, out), = outbound(e, [pkt])
            assert status == Status.OK
            proto = 17 if encap else 50
            if cls is IP:
                assert IP(out).proto == proto and IP(out).chksum == IP(bytes(_rebuilt(IP(out)))).chksum
            else:
                assert (IPv6(out).nh == proto) if encap else (IPv6(out)[IPv6ExtHdrHopByHop].nh == proto)
                assert IPv6(out).plen == len(out) - 40
            assert bytes(ssa.decrypt(cls(out))) == pkt
            (status, back, _), = inbound(e, [ssa.encrypt(cls(pkt), seq_num=2)])
            assert status == Status.OK and back == pkt
            (status, back, _), = inbound(e, [out])
            assert status == Status.OK and back == pkt


# -- outer header policy ------------------------------------------------------------


def test_outer_ipv4_header_fields():
    sa = make_sa(ttl=17, df="copy", dscp=None, ecn="normal")
    e = pair(sa)
    inners = [inner_v4(1, tos=0xB9, flags="DF"), inner_v4(2, tos=0x02), inner_v6(3, tc=0x4B)]
    res = outbound(e, inners)
    hdrs = [IP(out) for _, out in res]
    assert [h.id for h in hdrs] == [0, 1, 2]
    assert [h.ttl for h in hdrs] == [17] * 3
    assert [h.tos for h in hdrs] == [0xB9, 0x02, 0x4B]
    assert [bool(h.flags.DF) for h in hdrs] == [True, False, True]
    assert all(h.proto == 50 and h.src == OUT_V4[0] and h.dst == OUT_V4[1] for h in hdrs)
    for _, out in res:   # checksum as scapy computes it
        assert IP(out).chksum == IP(bytes(_rebuilt(IP(out)))).chksum


def _rebuilt(pkt):
    p = pkt.copy()
    del p.chksum
    return p


def test_outer_policies_fixed_dscp_compat_ecn_df_and_flowlabel():
    e = ReferenceEngine()
    e.add_sa(0, make_sa(dscp=10, ecn="compat", df="set"), Direction.OUT)
    e.add_sa(1, make_sa(df="clear"), Direction.OUT)
    e.add_sa(2, make_sa(src=OUT_V6[0], dst=OUT_V6[1], flowlabel="copy"), Direction.OUT)
    e.add_sa(3, make_sa(src=OUT_V6[0], dst=OUT_V6[1], flowlabel="zero"), Direction.OUT)
    (_, a), = outbound(e, [inner_v4(0, tos=0x03)], index=0)
    assert IP(a).tos == 10 << 2 and IP(a).flags.DF
    (_, b), = outbound(e, [inner_v4(0, flags="DF")], index=1)
    assert not IP(b).flags.DF
    (_, c), = outbound(e, [inner_v6(0, fl=0x12345, tc=0x01)], index=2)
    (_, d), = outbound(e, [inner_v6(0, fl=0x12345)], index=3)
    (_, f), = outbound(e, [inner_v4(0)], index=2)
    assert (IPv6(c).fl, IPv6(c).tc, IPv6(d).fl, IPv6(f).fl) == (0x12345, 0x01, 0, 0)


# -- inbound contract ------------------------------------------------------------------


def _esp_with(ssa: SecurityAssociation, outer: SA, seq: int, data: bytes, nh: int,
              padding: bytes | None = None, padlen: int | None = None) -> bytes:
    """Hand-built ESP through scapy's primitives, for trailers scapy would not make."""
    if padding is None:
        padlen = -(len(data) + 2) % 4
        padding = bytes(range(1, padlen + 1))
    plain = _ESPPlain(spi=outer.spi, seq=seq, iv=ssa.crypt_algo.generate_iv(), data=Raw(data),
                      padding=padding, padlen=padlen, nh=nh)
    enc = ssa.crypt_algo.encrypt(ssa, plain, ssa.crypt_key, ssa.crypt_icv_size)
    ssa.auth_algo.sign(enc, ssa.auth_key)
    return bytes(IP(src=str(outer.src), dst=str(outer.dst)) / enc)


def test_replay_and_tamper_leave_state_consistent():
    sa = make_sa("chacha20-poly1305", replay_window=32)
    e = pair(sa)
    ssa = scapy_sa(sa)
    good = bytes(ssa.encrypt(IP(inner_v4(1)), seq_num=5))
    bad = bytearray(good)
    bad[-1] ^= 1
    old = bytes(ssa.encrypt(IP(inner_v4(2)), seq_num=1))
    later = bytes(ssa.encrypt(IP(inner_v4(3)), seq_num=100))
    res = inbound(e, [bad, good, good, later, old])
    assert [s for s, _, _ in res] == [Status.AUTH_FAILED, Status.OK, Status.REPLAY, Status.OK, Status.REPLAY]
    assert res[0][1] == bytes(bad)          # dropped packets are left untouched
    st = e.stats(1)
    assert st.drops == {Status.AUTH_FAILED: 1, Status.REPLAY: 2} and st.seq == 100 and st.packets == 2


def test_window_zero_accepts_duplicates():
    sa = make_sa(replay_window=0)
    e = pair(sa)
    pkt = scapy_sa(sa).encrypt(IP(inner_v4()), seq_num=9)
    assert [s for s, _, _ in inbound(e, [pkt, pkt])] == [Status.OK, Status.OK]


def test_not_esp_and_engine_wide_drops():
    sa = make_sa(udp_encap=True)
    e = pair(sa)
    base = IP(src=OUT_V4[0], dst=OUT_V4[1])
    pkts = [
        base / UDP(sport=4500, dport=4500) / b"\xff",                          # NAT keepalive
        base / UDP(sport=4500, dport=4500) / (b"\x00" * 4 + b"ike message"),   # non-ESP marker
        base / TCP(),
        base / UDP(sport=53, dport=53) / b"dns",
        base / UDP(sport=4500, dport=4500) / b"\x01\x02",                     # too short for ESP
        IP(src=OUT_V4[0], dst=OUT_V4[1], proto=50, flags="MF") / (b"x" * 40),  # fragment
        base / ESP(spi=0xDEAD, seq=1, data=b"\x00" * 40),                    # unknown SPI
        b"\x45\x00\x00\x05garbage",
    ]
    res = inbound(e, pkts)
    want = [Status.NOT_ESP] * 4 + [Status.MALFORMED, Status.FRAGMENT, Status.NO_SA, Status.MALFORMED]
    assert [s for s, _, _ in res] == want
    assert [p for _, p, _ in res[:4]] == [bytes(p) for p in pkts[:4]]
    drops = e.engine_drops()
    assert drops == {Status.NOT_ESP: 4, Status.MALFORMED: 2, Status.FRAGMENT: 1, Status.NO_SA: 1}
    assert e.stats(1).drops == {}


def test_shared_spi_resolved_by_destination():
    a = make_sa(src="10.0.0.1", dst="10.0.0.2")
    b = make_sa(src="10.0.0.1", dst="10.0.0.3")
    e = ReferenceEngine()
    e.add_sa(4, a, Direction.IN)
    e.add_sa(5, b, Direction.IN)
    e.add_sa(6, a, Direction.OUT)        # same SPI outbound: never an inbound match
    res = inbound(e, [scapy_sa(b).encrypt(IP(inner_v4()), seq_num=1), scapy_sa(a).encrypt(IP(inner_v4()), seq_num=1)])
    assert [(s, i) for s, _, i in res] == [(Status.OK, 5), (Status.OK, 4)]
    odd = IP(src="10.0.0.1", dst="10.0.0.9") / ESP(spi=a.spi, seq=1, data=b"\x00" * 40)
    assert inbound(e, [odd])[0][0] == Status.NO_SA


def test_short_ciphertext_dummy_padding_and_tfc():
    sa = make_sa("null", "hmac-sha256-128", replay_window=64)
    e = pair(sa)
    ssa = scapy_sa(sa)
    inner = inner_v4(4)
    cases = [
        (_esp_with(ssa, sa, 1, b"", 59), Status.DUMMY),
        (_esp_with(ssa, sa, 2, inner, 4, padding=b"\x01\x02\x04", padlen=3), Status.PADDING),
        (_esp_with(ssa, sa, 3, b"", 4, padding=b"", padlen=9), Status.PADDING),
        (_esp_with(ssa, sa, 4, inner + bytes(30), 4), Status.OK),                 # TFC padding trimmed
        (_esp_with(ssa, sa, 5, inner, 41), Status.MALFORMED),                     # next header vs version
        (_esp_with(ssa, sa, 6, inner[:-5], 4), Status.MALFORMED),                 # inner longer than payload
        (bytes(IP(src=OUT_V4[0], dst=OUT_V4[1]) / ESP(spi=sa.spi, seq=7, data=b"\x00" * 10)), Status.MALFORMED),
    ]
    res = inbound(e, [p for p, _ in cases])
    assert [s for s, _, _ in res] == [want for _, want in cases]
    assert res[3][1] == inner
    assert e.stats(1).drops == {Status.DUMMY: 1, Status.PADDING: 2, Status.MALFORMED: 3}


def test_cbc_ciphertext_must_be_whole_blocks():
    sa = make_sa("aes-cbc-128", "hmac-sha256-128")
    e = pair(sa)
    good = bytes(scapy_sa(sa).encrypt(IP(inner_v4()), seq_num=1))
    esp = good[20:]
    cut = bytes(IP(src=OUT_V4[0], dst=OUT_V4[1], proto=50) / Raw(esp[:-20] + esp[-16:]))  # 4 bytes short
    assert inbound(e, [cut])[0][0] == Status.MALFORMED


def test_ecn_decapsulation():
    sa = make_sa()
    e = pair(sa)
    ssa = scapy_sa(sa)

    def wire(inner_tos, outer_tos, seq):
        p = ssa.encrypt(IP(inner_v4(1, tos=inner_tos)), seq_num=seq)
        p.tos = outer_tos
        del p.chksum
        return bytes(p)

    res = inbound(e, [wire(0x00, 0x03, 1), wire(0x02, 0x03, 2), wire(0x02, 0x01, 3), wire(0x01, 0x02, 4)])
    assert [s for s, _, _ in res] == [Status.ECN, Status.OK, Status.OK, Status.OK]
    tos = [IP(p).tos for _, p, _ in res[1:]]
    assert tos == [0x03, 0x01, 0x01]
    for _, p, _ in res[1:]:
        assert IP(p).chksum == IP(bytes(_rebuilt(IP(p)))).chksum


def test_traffic_selectors():
    sa = make_sa(remote_ts=[TrafficSelector.from_network("192.168.1.0/24", proto=6, port_lo=40000, port_hi=40010)],
                 local_ts=[TrafficSelector.from_network("192.168.2.0/24")])
    e = pair(sa)
    ssa = scapy_sa(sa)
    pkts = [inner_v4(3), inner_v4(20),
            bytes(IP(src="192.168.1.10", dst="192.168.9.9") / TCP(sport=40001)),
            bytes(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=40001)),
            bytes(IP(src="192.168.1.10", dst="192.168.2.20", proto=1) / b"\x08\x00\x00\x00")]
    res = inbound(e, [ssa.encrypt(IP(p), seq_num=i + 1) for i, p in enumerate(pkts)])
    assert [s for s, _, _ in res] == [Status.OK, Status.SELECTOR, Status.SELECTOR, Status.SELECTOR,
                                      Status.SELECTOR]
    icmp_sa = make_sa(remote_ts=[TrafficSelector.from_network("192.168.1.0/24", proto=1, port_lo=8, port_hi=8)])
    e2 = pair(icmp_sa)
    (s, _, _), = inbound(e2, [scapy_sa(icmp_sa).encrypt(IP(pkts[4]), seq_num=1)])
    assert s == Status.SELECTOR    # ICMP type/code are not read as ports: fails closed
    any_port = make_sa(remote_ts=[TrafficSelector.from_network("192.168.1.0/24", proto=1)])
    e3 = pair(any_port)
    (s, _, _), = inbound(e3, [scapy_sa(any_port).encrypt(IP(pkts[4]), seq_num=1)])
    assert s == Status.OK


# -- outbound state ------------------------------------------------------------------


def test_sequence_exhaustion_without_esn():
    sa = make_sa(seq=2**32 - 2)
    e = pair(sa)
    res = outbound(e, [inner_v4(n) for n in range(4)])
    assert [s for s, _ in res] == [Status.OK, Status.OK, Status.SEQ_EXHAUSTED, Status.SEQ_EXHAUSTED]
    st = e.stats(0)
    assert st.flags & SAFlag.SEQ_EXHAUSTED and st.drops == {Status.SEQ_EXHAUSTED: 2} and st.packets == 2
    assert struct.unpack_from("!I", res[1][1], 24)[0] == 2**32 - 1


def test_lifetimes():
    sa = make_sa(lifetime=Lifetime(soft_packets=2, hard_packets=3))
    e = pair(sa)
    res = outbound(e, [inner_v4(n) for n in range(5)])
    assert [s for s, _ in res] == [Status.OK] * 3 + [Status.HARD_EXPIRED] * 2
    assert e.stats(0).flags == SAFlag.SOFT_EXPIRED | SAFlag.HARD_EXPIRED
    p = inner_v4(10)
    sb = make_sa(lifetime=Lifetime(hard_bytes=2 * len(p) + 1, soft_bytes=len(p)))
    e2 = pair(sb)
    assert [s for s, _ in outbound(e2, [p, p, p])] == [Status.OK, Status.OK, Status.HARD_EXPIRED]
    # Inbound counts decrypted bytes the same way.
    ssa = scapy_sa(sb)
    res = inbound(e2, [ssa.encrypt(IP(p), seq_num=i + 1) for i in range(3)])
    assert [s for s, _, _ in res] == [Status.OK, Status.OK, Status.HARD_EXPIRED]
    assert e2.stats(1).bytes == 2 * len(p)


def test_malformed_and_too_big_outbound_burn_no_sequence_number():
    sa = make_sa()
    e = pair(sa)
    # Batch.append keeps room for ESP framing, so place a slot-filling packet by hand.
    b = Batch(capacity=2, mtu=200)
    b.append(b"\x45" + bytes(30))
    big = bytes(IP(src="192.168.1.1", dst="192.168.2.2") / Raw(bytes(b.slot_size - 40)))
    b.buf[b.slot_size:2 * b.slot_size - 20] = list(big)
    b.off[1], b.len[1], b.n = b.slot_size, len(big), 2
    e.outbound(b)
    assert [Status(int(s)) for s in b.status[:2]] == [Status.MALFORMED, Status.TOO_BIG]
    assert b.packet(1) == big
    (s, out), = outbound(e, [inner_v4(0)])
    assert s == Status.OK and struct.unpack_from("!I", out, 24)[0] == 1


def test_unknown_or_wrong_direction_sa_is_no_sa():
    e = ReferenceEngine()
    e.add_sa(1, make_sa(), Direction.IN)
    assert [s for s, _ in outbound(e, [inner_v4()], index=1)] == [Status.NO_SA]
    assert [s for s, _ in outbound(e, [inner_v4()], index=7)] == [Status.NO_SA]
    assert e.engine_drops() == {Status.NO_SA: 2}


def test_garbage_never_raises():
    sa = make_sa()
    e = pair(sa)
    rnd = [os.urandom(n) for n in (0, 1, 19, 20, 40, 60, 300)]
    rnd += [b"\x45" + os.urandom(40), b"\x60" + os.urandom(60)]
    b = Batch(capacity=len(rnd) * 2)
    for p in rnd:
        if p:
            b.append(p)
            b.append(p, sa=0)
    e.inbound(b)
    assert all(Status(int(s)) != Status.OK for s in b.status[:b.n])
    b2 = Batch(capacity=len(rnd))
    for p in rnd:
        if p:
            b2.append(p)
    e.outbound(b2)
    assert all(Status(int(s)) in (Status.MALFORMED, Status.OK) for s in b2.status[:b2.n])


# -- SA management -----------------------------------------------------------------------


def test_remove_sa_zeroes_keys_and_forgets_spi():
    sa = make_sa("aes-cbc-256", "hmac-sha384-192")
    e = pair(sa)
    session = e._sessions[1]
    e.remove_sa(1)
    assert not any(session._cipher_key) and not any(session._integ_key)
    pkt = scapy_sa(sa).encrypt(IP(inner_v4()), seq_num=1)
    assert inbound(e, [pkt])[0][0] == Status.NO_SA
    with pytest.raises(EngineError):
        e.stats(1)
    with pytest.raises(EngineError):
        e.remove_sa(1)
    with pytest.raises(EngineError):
        e.add_sa(8, sa, Direction.OUT)     # capacity 8: indexes 0..7
    e.close()
    with pytest.raises(EngineError):
        e.stats(0)


def test_discovery_lists_reference_engine():
    info = {i.name: i for i in discover()}["reference"]
    assert info.present and "aes-gcm-128" in info.algorithms and "hmac-sha512-256" in info.algorithms
    assert create("reference", capacity=4).name == "reference"


def test_bytes_past_the_ip_length_are_not_the_packet():
    # Link-layer padding after the IP total length (or the UDP length) is ignored.
    sa = make_sa(udp_encap=True)
    e = pair(sa)
    inner = inner_v4(6)
    (s, out), = outbound(e, [inner + b"\x00" * 6])
    assert s == Status.OK and bytes(scapy_sa(sa).decrypt(IP(out))) == inner
    assert e.stats(0).bytes == len(inner)
    wire = bytes(scapy_sa(sa).encrypt(IP(inner), seq_num=5))
    padded_ip = wire + b"\x00" * 4
    udp_short = bytearray(bytes(scapy_sa(sa).encrypt(IP(inner), seq_num=6)))
    udp_short[24:26] = struct.pack("!H", len(udp_short) - 20 - 4)  # UDP length excludes the last 4 bytes
    res = inbound(e, [padded_ip, bytes(udp_short)])
    assert res[0][:2] == (Status.OK, inner)
    assert res[1][0] == Status.AUTH_FAILED      # the ICV was cut off by the shorter UDP length
