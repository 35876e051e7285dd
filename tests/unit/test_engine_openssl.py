"""Focused self-tests of the C/OpenSSL engine against scapy's independent ESP code."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from functools import partial

import numpy as np
import pytest

pytest.importorskip("fastpath._esp_openssl")

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from support.sa import V4_A as A4  # noqa: E402
from support.sa import V4_B as B4  # noqa: E402
from support.sa import make_sa as build_sa  # noqa: E402
from support.sa import scapy_sa  # noqa: E402

from cdefs.sa import Direction, Lifetime, TrafficSelector  # noqa: E402
from fastpath.batch import Batch  # noqa: E402
from fastpath.engines.base import EngineError  # noqa: E402
from fastpath.engines.openssl import OpenSSLEngine, ffi, lib, probe  # noqa: E402
from fastpath.status import SAFlag, Status  # noqa: E402

# one SPI and keys that depend only on the algorithms: an SA built twice is the same SA
make_sa = partial(build_sa, spi=0x1000, keys="fixed")
ALG_PAIRS = [(e, None) for e in ("aes-gcm-128", "aes-gcm-256", "aes-gmac-128", "chacha20-poly1305")] + [
    ("aes-cbc-128", "hmac-sha256-128"), ("aes-cbc-256", "hmac-sha512-256"), ("null", "hmac-sha384-192")]


def run(engine: OpenSSLEngine, packets: list[bytes], outbound: bool, sa_index: int = 0) -> list[tuple[Status, bytes]]:
    b = Batch(capacity=max(len(packets), 1))
    b.extend(packets, sa=sa_index)
    (engine.outbound if outbound else engine.inbound)(b)
    return list(b.results())


def inner_packets(v6: bool, n: int = 3) -> list[bytes]:
    if v6:
        base = [IPv6(src="2001:db8:a::1", dst="2001:db8:b::1", tc=0x2A << 2 | 2, fl=0x12345) / UDP(sport=1234,
                dport=53) / (b"x" * 33),
                IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / TCP(sport=40000, dport=443) / (b"y" * 700),
                IPv6(src="2001:db8:a::1", dst="2001:db8:b::1") / IPv6ExtHdrHopByHop() / UDP(dport=9)]
    else:
        base = [IP(src="10.0.0.1", dst="10.0.1.1", tos=0xB8 | 1, flags="DF", id=7) / UDP(sport=1234, dport=53) / (
                b"x" * 33), IP(src="10.0.0.1", dst="10.0.1.1") / TCP(sport=40000, dport=443) / (b"y" * 1000),
                IP(src="10.0.0.1", dst="10.0.1.1") / ICMP() / b"ping"]
    return [bytes(p) for p in base[:n]]


@pytest.fixture
def engine():
    e = OpenSSLEngine(capacity=8)
    yield e
    e.close()


def test_probe_reports_openssl():
    ok, detail = probe()
    assert ok and "OpenSSL" in detail


@pytest.mark.parametrize("enc,integ", ALG_PAIRS)
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("v6", [False, True])
def test_outbound_decrypts_with_scapy(engine, enc, integ, mode, v6):
    sa = make_sa(enc, integ, family=6 if v6 else 4, mode=mode, udp_encap=(enc == "aes-gcm-128"))
    engine.add_sa(0, sa, Direction.OUT)
    # scapy drops IPv6 extension headers when it strips a NAT-T UDP header in transport mode
    packets = inner_packets(v6, 2 if (v6 and sa.udp_encap and mode == "transport") else 3)
    out = run(engine, packets, outbound=True)
    peer = scapy_sa(sa, seq=sa.seq)
    cls = IPv6 if v6 else IP
    for seq, (plain, (st, wire)) in enumerate(zip(packets, out, strict=True), start=1):
        assert st == Status.OK
        pkt = cls(wire)
        assert pkt[ESP].seq == seq
        if sa.udp_encap:
            assert pkt[UDP].sport == 4500 and pkt[UDP].dport == 4500
        got = peer.decrypt(pkt)
        if mode == "tunnel":
            assert bytes(got) == plain
        else:
            assert bytes(got) == bytes(cls(plain))
    st = engine.stats(0)
    assert st.packets == len(packets) and st.seq == len(packets) + 1
    assert st.bytes == sum(map(len, packets))


@pytest.mark.parametrize("enc,integ", ALG_PAIRS)
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_inbound_accepts_scapy_packets(engine, enc, integ, mode):
    v6 = enc in ("chacha20-poly1305", "aes-cbc-256")
    sa = make_sa(enc, integ, family=6 if v6 else 4, mode=mode, udp_encap=(enc == "aes-cbc-128"))
    engine.add_sa(3, sa, Direction.IN)
    peer = scapy_sa(sa, seq=sa.seq)
    packets = inner_packets(v6)
    if mode == "transport":  # scapy's transport mode keeps the addresses; ours are the SA's
        cls = IPv6 if v6 else IP
        packets = [bytes(cls(p)) for p in packets]
    wire = [bytes(peer.encrypt((IPv6 if v6 else IP)(p))) for p in packets]
    b = Batch(capacity=4)
    b.extend(wire)
    engine.inbound(b)
    for i, plain in enumerate(packets):
        assert Status(b.status[i]) == Status.OK, Status(b.status[i])
        assert b.sa[i] == 3
        assert b.packet(i) == plain
    assert engine.stats(3).seq == len(packets)


def test_roundtrip_many_sizes_and_esn_wrap(engine):
    sa_out = make_sa("aes-gcm-256", esn=True, seq=2**32 - 3, replay_window=128)
    sa_in = make_sa("aes-gcm-256", esn=True, seq=2**32 - 3, replay_window=128)
    engine.add_sa(0, sa_out, Direction.OUT)
    engine.add_sa(1, sa_in, Direction.IN)
    packets = [bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP() / os.urandom(n)) for n in range(0, 60, 7)]
    out = run(engine, packets, outbound=True)
    assert all(s == Status.OK for s, _ in out)
    # The IV carries the full 64-bit sequence number; scapy checks the ESN AAD.
    for k, (_, wire) in enumerate(out):
        seq = 2**32 - 3 + k
        peer = scapy_sa(sa_out, seq=sa_out.seq)
        esp = IP(wire)[ESP]
        assert esp.seq == seq & 0xFFFFFFFF and esp.data[:8] == seq.to_bytes(8, "big")
        assert bytes(peer.decrypt(IP(wire), esn_en=True, esn=seq >> 32)) == packets[k]
    back = run(engine, [w for _, w in out], outbound=False, sa_index=0)
    assert [s for s, _ in back] == [Status.OK] * len(packets)
    assert [p for _, p in back] == packets
    assert engine.stats(1).seq == 2**32 - 3 + len(packets) - 1


def test_cbc_esn_hmac_covers_seq_hi(engine):
    sa = make_sa("aes-cbc-128", "hmac-sha256-128", esn=True, seq=5 * 2**32 + 9)
    engine.add_sa(0, sa, Direction.OUT)
    (st, wire), = run(engine, inner_packets(False, 1), outbound=True)
    assert st == Status.OK
    peer = scapy_sa(sa, seq=sa.seq)
    assert bytes(peer.decrypt(IP(wire), esn_en=True, esn=5)) == inner_packets(False, 1)[0]


def test_outer_header_policies(engine):
    sa = make_sa("aes-gcm-128", ttl=17, df="copy", dscp=None, ecn="normal")
    engine.add_sa(0, sa, Direction.OUT)
    sa6 = make_sa("aes-gcm-128", family=6, spi=0x2000, dscp=10, ecn="compat", flowlabel="copy")
    engine.add_sa(1, sa6, Direction.OUT)
    inner4 = inner_packets(False, 1)[0]
    inner6 = inner_packets(True, 1)[0]
    (st, w1), (_, w2) = run(engine, [inner4, inner4], outbound=True)
    o1, o2 = IP(w1), IP(w2)
    assert st == Status.OK and o1.ttl == 17 and o1.flags.DF and o1.tos == 0xB9
    assert (o1.id, o2.id) == (0, 1) and o1.proto == 50 and o1.src == str(A4) and o1.dst == str(B4)
    assert IP(bytes(o1)).chksum == o1.chksum  # scapy recomputes it identically
    (st, w), = run(engine, [inner6], outbound=True, sa_index=1)
    o = IPv6(w)
    assert st == Status.OK and o.tc == 10 << 2 and o.fl == 0x12345 and o.nh == 50 and o.hlim == 64
    (st, w), = run(engine, [inner6], outbound=True, sa_index=0)  # 6-in-4: DF set, ECN copied
    assert st == Status.OK and IP(w).flags.DF and IP(w).tos == (0x2A << 2 | 2)


def test_udp6_checksum_is_valid(engine):
    sa = make_sa("aes-gcm-128", family=6, udp_encap=True)
    engine.add_sa(0, sa, Direction.OUT)
    (st, w), = run(engine, inner_packets(False, 1), outbound=True)
    pkt = IPv6(w)
    sent = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert st == Status.OK and sent == IPv6(bytes(pkt))[UDP].chksum


def _pair(engine, **kw):
    sa = make_sa("aes-cbc-128", "hmac-sha256-128", **kw)
    engine.add_sa(0, sa, Direction.OUT)
    engine.add_sa(1, sa, Direction.IN)
    return sa


def test_replay_and_tampered_icv(engine):
    _pair(engine, replay_window=32)
    pkts = [bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP() / bytes([i])) for i in range(40)]
    wire = [w for _, w in run(engine, pkts, outbound=True)]
    tampered = bytearray(wire[0])
    tampered[-1] ^= 1
    res = run(engine, [bytes(tampered), wire[0], wire[0], wire[39], wire[5], wire[8], wire[7]], outbound=False)
    # seq 8 is exactly window (32) below the top (40): too old; seq 9 is the oldest in the window
    assert [s for s, _ in res] == [Status.AUTH_FAILED, Status.OK, Status.REPLAY, Status.OK, Status.REPLAY,
                                   Status.OK, Status.REPLAY]
    st = engine.stats(1)
    assert st.drops == {Status.AUTH_FAILED: 1, Status.REPLAY: 3} and st.seq == 40 and st.packets == 3


def test_replay_window_4096(engine):
    _pair(engine, replay_window=4096)
    pkts = [bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP())] * 5000
    b = Batch(capacity=5000, mtu=200)
    b.extend(pkts)
    engine.outbound(b)
    wire = list(b)
    order = [4999, 904, 903, 0, 4999, 2000, 2000]  # wire[k] carries seq k+1
    res = run(engine, [wire[i] for i in order], outbound=False)
    assert [s for s, _ in res] == [Status.OK, Status.OK, Status.REPLAY, Status.REPLAY, Status.REPLAY, Status.OK,
                                   Status.REPLAY]


def test_no_sa_not_esp_keepalive_and_fragment(engine):
    _pair(engine, udp_encap=True)
    good = run(engine, inner_packets(False, 1), outbound=True)[0][1]
    keepalive = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=4500, dport=4500) / b"\xff")
    ike = bytes(IP(dst="5.6.7.8") / UDP(sport=4500, dport=4500) / (b"\0" * 4 + b"ike" * 10))
    other = bytes(IP(dst="5.6.7.8") / TCP())
    frag = bytes(IP(dst="5.6.7.8", flags="MF", proto=50) / (b"\1" * 40))
    wrong_spi = bytearray(good)
    wrong_spi[28:32] = b"\x99\x99\x99\x99"
    res = run(engine, [keepalive, ike, other, frag, bytes(wrong_spi), good], outbound=False)
    assert [s for s, _ in res] == [Status.NOT_ESP, Status.NOT_ESP, Status.NOT_ESP, Status.FRAGMENT, Status.NO_SA,
                                   Status.OK]
    assert res[0][1] == keepalive and res[1][1] == ike  # untouched
    assert engine.engine_drops() == {Status.NOT_ESP: 3, Status.FRAGMENT: 1, Status.NO_SA: 1}


def test_spi_shared_by_two_sas_picks_destination(engine):
    a = make_sa("aes-gcm-128")
    b_ = make_sa("aes-gcm-128", src=B4, dst=ipaddress.ip_address("203.0.113.9"))
    engine.add_sa(4, a, Direction.IN)
    engine.add_sa(5, b_, Direction.IN)
    wire_b = bytes(scapy_sa(b_, seq=b_.seq).encrypt(IP(inner_packets(False, 1)[0])))
    wire_a = bytes(scapy_sa(a, seq=a.seq).encrypt(IP(inner_packets(False, 1)[0])))
    bt = Batch(capacity=2)
    bt.extend([wire_b, wire_a])
    engine.inbound(bt)
    assert list(bt.status[:2]) == [Status.OK, Status.OK] and list(bt.sa[:2]) == [5, 4]


def test_ecn_decapsulation(engine):
    sa = make_sa("aes-gcm-128")
    engine.add_sa(0, sa, Direction.IN)
    peer = scapy_sa(sa, seq=sa.seq)

    def wire(outer_ecn: int, inner_ecn: int) -> bytes:
        peer.tunnel_header = IP(src=str(A4), dst=str(B4), tos=outer_ecn)
        return bytes(peer.encrypt(IP(src="10.0.0.1", dst="10.0.1.1", tos=inner_ecn) / UDP()))

    res = run(engine, [wire(3, 0), wire(3, 2), wire(1, 2), wire(0, 1)], outbound=False)
    assert res[0][0] == Status.ECN
    assert [IP(p).tos & 3 for _, p in res[1:]] == [3, 1, 1]
    for _, p in res[1:]:
        pkt = IP(p)
        assert pkt.chksum == IP(bytes(pkt.copy().__class__(bytes(pkt)))).chksum
        del pkt.chksum
        assert IP(bytes(pkt)).chksum == IP(p).chksum


def test_selectors(engine):
    sa = make_sa("aes-gcm-128", local_ts=[TrafficSelector.from_network("10.0.1.0/24", proto=17, port_lo=53,
                                                                        port_hi=53)],
                 remote_ts=[TrafficSelector.from_network("10.0.0.0/24")])
    engine.add_sa(0, sa, Direction.IN)
    peer = scapy_sa(sa, seq=sa.seq)
    ok = IP(src="10.0.0.1", dst="10.0.1.1") / UDP(dport=53)
    bad_port = IP(src="10.0.0.1", dst="10.0.1.1") / UDP(dport=54)
    bad_src = IP(src="10.9.0.1", dst="10.0.1.1") / UDP(dport=53)
    icmp = IP(src="10.0.0.1", dst="10.0.1.1") / ICMP()
    res = run(engine, [bytes(peer.encrypt(p)) for p in (ok, bad_port, bad_src, icmp)], outbound=False)
    assert [s for s, _ in res] == [Status.OK, Status.SELECTOR, Status.SELECTOR, Status.SELECTOR]


def test_tfc_padding_trimmed_and_dummy(engine):
    sa = make_sa("aes-gcm-128")
    engine.add_sa(0, sa, Direction.IN)
    peer = scapy_sa(sa, seq=sa.seq)
    inner = IP(src="10.0.0.1", dst="10.0.1.1") / UDP() / b"data"
    padded = bytes(peer.encrypt(IP(bytes(inner) + b"\0" * 50)))  # TFC: junk after the inner packet
    (st, p), = run(engine, [padded], outbound=False)
    assert st == Status.OK and p == bytes(inner)
    sa2 = make_sa("aes-gcm-128", spi=0x3000)
    engine.add_sa(1, sa2, Direction.IN)
    peer2 = scapy_sa(sa2, seq=sa2.seq)
    peer2.tunnel_header = None
    dummy = peer2.encrypt(IP(src=str(A4), dst=str(B4), proto=59) / (b"\x00" * 8))
    (st, _), = run(engine, [bytes(dummy)], outbound=False)
    assert st == Status.DUMMY and engine.stats(1).drops == {Status.DUMMY: 1}


def test_lifetimes_and_sequence_exhaustion(engine):
    sa = make_sa("aes-gcm-128", lifetime=Lifetime(soft_packets=2, hard_packets=3))
    engine.add_sa(0, sa, Direction.OUT)
    res = run(engine, inner_packets(False, 1) * 4, outbound=True)
    assert [s for s, _ in res] == [Status.OK] * 3 + [Status.HARD_EXPIRED]
    assert engine.stats(0).flags == SAFlag.SOFT_EXPIRED | SAFlag.HARD_EXPIRED
    size = len(inner_packets(False, 1)[0])
    engine.add_sa(1, make_sa("aes-gcm-128", lifetime=Lifetime(hard_bytes=2 * size)), Direction.OUT)
    res = run(engine, inner_packets(False, 1) * 3, outbound=True, sa_index=1)
    assert [s for s, _ in res] == [Status.OK, Status.OK, Status.HARD_EXPIRED]
    engine.add_sa(2, make_sa("aes-gcm-128", seq=2**32 - 2), Direction.OUT)
    res = run(engine, inner_packets(False, 1) * 3, outbound=True, sa_index=2)
    assert [s for s, _ in res] == [Status.OK, Status.OK, Status.SEQ_EXHAUSTED]
    assert IP(res[1][1])[ESP].seq == 2**32 - 1
    assert SAFlag.SEQ_EXHAUSTED in engine.stats(2).flags


def test_too_big_and_malformed_outbound(engine):
    engine.add_sa(0, make_sa("aes-cbc-256", "hmac-sha512-256"), Direction.OUT)
    b = Batch(capacity=3, mtu=1500)
    b.append(bytes(IP() / (b"z" * (b.max_packet - 20))))
    b.append(b"\x45\x00\x00\xff" + b"\0" * 30)  # total length beyond the data
    b.append(b"\x60" + b"\0" * 10)
    # packet 0 fills its whole slot: no room left for ESP framing
    b.buf[0:b.slot_size] = np.frombuffer(bytes(IP(len=b.slot_size) / (b"z" * (b.slot_size - 20))), np.uint8)
    b.off[0], b.len[0] = 0, b.slot_size
    engine.outbound(b)
    assert list(b.status[:3]) == [Status.TOO_BIG, Status.MALFORMED, Status.MALFORMED]


def test_remove_sa_and_bad_index(engine):
    sa = make_sa("aes-gcm-128")
    engine.add_sa(0, sa, Direction.OUT)
    engine.remove_sa(0)
    res = run(engine, inner_packets(False, 1), outbound=True)
    assert res[0][0] == Status.NO_SA
    with pytest.raises(EngineError):
        engine.stats(0)
    with pytest.raises(EngineError):
        engine.add_sa(99, sa, Direction.OUT)


def test_garbage_never_crashes(engine):
    """Random bytes, random off/len/sa: every packet gets a status, nothing outside its slot changes."""
    _pair(engine, replay_window=64)
    engine.add_sa(2, make_sa("chacha20-poly1305", spi=0x5000, mode="transport", family=6), Direction.IN)
    engine.add_sa(3, make_sa("aes-gmac-256", spi=0x6000, udp_encap=True), Direction.IN)
    rng = np.random.default_rng(1)
    good = [w for _, w in run(engine, inner_packets(False), outbound=True)]
    for round_ in range(30):
        b = Batch(capacity=64, mtu=300)
        guard = b.slot_size
        for _ in range(64):
            kind = rng.integers(4)
            if kind == 0 and good:  # valid packet with flipped bits
                data = bytearray(good[rng.integers(len(good))])
                for _ in range(rng.integers(1, 4)):
                    data[rng.integers(len(data))] ^= 1 << rng.integers(8)
                data = bytes(data[: b.max_packet])
            elif kind == 1:  # plausible headers, random rest
                hdr = bytes(IP(src="1.1.1.1", dst=str(B4), proto=int(rng.choice([50, 17]))))
                data = hdr + rng.bytes(int(rng.integers(0, 200)))
            else:
                data = rng.bytes(int(rng.integers(0, b.max_packet)))
            b.append(data, sa=int(rng.integers(0, 12)))
        # Some packets claim offsets and lengths that are not inside their slot.
        for i in rng.integers(0, 64, 8):
            b.off[i] = int(rng.integers(0, 2**32))
            b.len[i] = int(rng.integers(0, 2**32))
        b.len[5] = guard  # a full-slot length at a non-zero offset
        snapshot = b.buf.copy()
        before = [(int(b.off[i]), int(b.len[i])) for i in range(64)]
        (engine.outbound if round_ % 2 else engine.inbound)(b)
        for i in range(64):
            assert Status(int(b.status[i])) in Status
            start, end = i * guard, (i + 1) * guard
            if b.status[i] == Status.OK:
                assert start <= b.off[i] and b.off[i] + b.len[i] <= end
            elif before[i][0] < start or before[i][0] + before[i][1] > end:
                # an out-of-slot packet is rejected without touching the slot
                assert np.array_equal(b.buf[start:end], snapshot[start:end])


def test_kat_primitives_match_cryptography():
    key, nonce, aad, msg = os.urandom(16), os.urandom(12), b"aad-bytes", os.urandom(77)
    out, tag = ffi.new("uint8_t[]", len(msg)), ffi.new("uint8_t[16]")
    assert lib.ipsg_aead_seal(2, key, 16, nonce, 12, aad, len(aad), msg, len(msg), out, tag) == 0
    assert bytes(out) + bytes(tag) == AESGCM(key).encrypt(nonce, msg, aad)
    back = ffi.new("uint8_t[]", len(msg))
    assert lib.ipsg_aead_open(2, key, 16, nonce, 12, aad, len(aad), bytes(out), len(msg), back, tag) == 0
    assert bytes(back) == msg
    bad = bytes(tag)[:-1] + bytes([tag[15] ^ 1])
    assert lib.ipsg_aead_open(2, key, 16, nonce, 12, aad, len(aad), bytes(out), len(msg), back, bad) == -1
    ckey = os.urandom(32)
    assert lib.ipsg_aead_seal(4, ckey, 32, nonce, 12, aad, len(aad), msg, len(msg), out, tag) == 0
    assert bytes(out) + bytes(tag) == ChaCha20Poly1305(ckey).encrypt(nonce, msg, aad)
    # GMAC: everything is AAD; the tag equals GCM's over an empty plaintext.
    assert lib.ipsg_aead_seal(3, key, 16, nonce, 12, aad, len(aad), msg, len(msg), out, tag) == 0
    assert bytes(out) == msg and bytes(tag) == AESGCM(key).encrypt(nonce, b"", aad + msg)
    mac = ffi.new("uint8_t[64]")
    for code, name in ((1, "sha256"), (2, "sha384"), (3, "sha512")):
        n = lib.ipsg_hmac(code, key, len(key), msg, len(msg), mac)
        assert bytes(mac)[:n] == hmac.new(key, msg, getattr(hashlib, name)).digest()
