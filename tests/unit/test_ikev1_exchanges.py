"""Our IKEv1 initiator against our responder in memory (support.ikev1_pair): main and aggressive mode
with PSK, quick mode with and without PFS, NAT detection and the float, informational delete and DPD,
and the messages that must change nothing: wrong PSK, no common proposal, garbage, out of order,
replayed.  Interop with a real peer is tests/interop/test_ikev1_charon.py."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from support.ikev1_pair import NAT_PUBLIC, Pair, configs

from control.ike.events import ChildSaDeleted, ChildSaEstablished
from control.ikev1.codec import decode_header
from control.ikev1.config import Ikev1Config
from control.ikev1.constants import Exchange
from control.ikev1.events import DpdAck, IsakmpSaDeleted, IsakmpSaEstablished, IsakmpSaFailed
from control.ikev1.keys import P1Suite, derive_phase1
from control.ikev1.sa import Ikev1SA


def _up(pair: Pair) -> tuple[ChildSaEstablished, ChildSaEstablished]:
    pair.i.initiate(pair.now)
    pair.run()
    ci, cr = pair.of("i", ChildSaEstablished), pair.of("r", ChildSaEstablished)
    assert len(ci) == 1 and len(cr) == 1, (pair.events_i, pair.events_r, pair.i.stats, pair.r.stats)
    return ci[0], cr[0]


@pytest.mark.parametrize("aggressive", [False, True])
@pytest.mark.parametrize("ike,esp", [
    ("aes256-sha256-modp2048", "aes128-sha256"),
    ("aes128-sha1-ecp256", "aes256gcm16-modp2048"),        # PFS, and SKEYID_e (SHA-1) expanded
    ("aes256-sha384-ecp384", "aes256-sha512-ecp384"),
    ("aes192-sha512-curve25519", "aes128gcm16"),
])
def test_phase1_and_quick_mode_agree(ike: str, esp: str, aggressive: bool) -> None:
    pair = Pair(*configs(ike, esp, aggressive=aggressive))
    ci, cr = _up(pair)
    up_i, up_r = pair.of("i", IsakmpSaEstablished)[0], pair.of("r", IsakmpSaEstablished)[0]
    assert (up_i.cookie_i, up_i.cookie_r) == (up_r.cookie_i, up_r.cookie_r)
    assert up_i.initiator and not up_r.initiator and up_i.aggressive == aggressive
    assert str(up_i.remote_id) == "gw-b.example" and str(up_r.remote_id) == "gw-a.example"
    assert pair.i.keys.skeyid_d == pair.r.keys.skeyid_d and pair.i.keys.enc_key == pair.r.keys.enc_key
    # each side's outbound SA is the other's inbound one: same SPI, same keys
    for a, b in ((ci, cr), (cr, ci)):
        assert a.outbound.spi == b.inbound.spi
        assert a.outbound.enc_key == b.inbound.enc_key and a.outbound.integ_key == b.inbound.integ_key
    assert ci.inbound.enc_key != ci.outbound.enc_key
    assert len(ci.inbound.enc_key) == ci.suite.enc_key_len and len(ci.inbound.integ_key) == ci.suite.integ_key_len
    assert [str(t.start) for t in ci.local_ts] == ["10.1.0.0"] and [str(t.start) for t in cr.local_ts] == ["10.2.0.0"]
    assert pair.i.quick == {} and pair.r.quick == {}       # both quick mode states finished
    # identity protection: main mode's identities travel encrypted, aggressive mode's in the clear
    clear = b"".join(d for _, d in pair.wire)
    assert (b"gw-a.example" in clear) == aggressive


def test_skeyid_children_and_key_expansion_follow_rfc2409() -> None:
    """SKEYID_d/_a/_e and appendix B's Ka = K1 | K2 with HMAC computed by the standard library."""
    suite = P1Suite(7, 256, 2, 1, 14, 0)
    skeyid, gxy, ci, cr = b"k" * 20, b"g" * 256, b"I" * 8, b"R" * 8

    def h(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha1).digest()
    d = h(skeyid, gxy + ci + cr + b"\0")
    a = h(skeyid, d + gxy + ci + cr + b"\1")
    e = h(skeyid, a + gxy + ci + cr + b"\2")
    k1 = h(e, b"\0")
    keys = derive_phase1(suite, skeyid, gxy, ci, cr)
    assert (keys.skeyid_d, keys.skeyid_a, keys.skeyid_e) == (d, a, e)
    assert keys.enc_key == (k1 + h(e, k1))[:32]


def test_nat_detected_and_floated_to_4500() -> None:
    pair = Pair(*configs(), nat=True)
    ci, cr = _up(pair)
    up_i, up_r = pair.of("i", IsakmpSaEstablished)[0], pair.of("r", IsakmpSaEstablished)[0]
    assert up_i.nat_local and not up_i.nat_remote and up_r.nat_remote and not up_r.nat_local
    assert pair.i.use_natt and pair.r.use_natt and pair.r.remote == (NAT_PUBLIC, 44500)
    assert ci.outbound.udp_encap and cr.outbound.udp_encap and cr.outbound.dport == 44500
    assert str(cr.outbound.dst) == NAT_PUBLIC


def test_wrong_psk_never_establishes() -> None:
    pair = Pair(*configs(psk_r=b"another-secret"))
    pair.i.initiate(0.0)
    pair.run()
    assert not pair.of("i", IsakmpSaEstablished) and not pair.of("r", IsakmpSaEstablished)
    # another PSK gives other keys: message 5 decrypts to noise (or, rarely, to payloads whose HASH_I fails)
    assert pair.r.stats["dropped"] == 1
    assert pair.r.state == "connecting" and pair.r.p1_step == "mm5"


def test_no_common_proposal_takes_no_state() -> None:
    ci, cr = configs("aes256-sha256-modp2048")
    cr = Ikev1Config(cr.local_id, cr.psk, cr.remote_id, "aes128-sha1-ecp384", cr.esp_proposals, cr.local_ts,
                     cr.remote_ts)
    pair = Pair(ci, cr)
    pair.i.initiate(0.0)
    pair.run()
    assert pair.r.stats["dropped: no acceptable phase 1 proposal"] == 1
    assert pair.r.cookie_i == b"" and pair.r.state == "created" and pair.r.p1_step == 0


def test_garbage_and_out_of_order_messages_change_nothing() -> None:
    pair = Pair(*configs())
    pair.i.initiate(0.0)
    mm1 = pair.i.datagrams_to_send()[0].data
    r = pair.r
    for junk in (b"", b"\x00" * 27, mm1[:40], mm1[:-1], b"\xff" * 200, mm1[:17] + b"\x20" + mm1[18:]):
        r.receive_datagram(junk, ("192.0.2.1", 500), 0.0, local_port=500)
    assert r.stats["dropped"] == 6 and r.cookie_i == b"" and r.state == "created"
    assert r.datagrams_to_send() == []
    # a full exchange, then main mode message 3 replayed into the established SA: dropped
    pair = Pair(*configs())
    _up(pair)
    mm3 = [d for s, d in pair.wire if s == "i"][1]
    before = dict(pair.r.stats)
    pair.r.receive_datagram(mm3, ("192.0.2.1", 500), 0.0, local_port=500)
    assert pair.r.stats["dropped"] == before.get("dropped", 0) + 1
    assert pair.r.datagrams_to_send() == [] and pair.r.established
    # message 5 before message 3: the responder has no keys yet
    p2 = Pair(*configs())
    p2.i.initiate(0.0)
    p2.r.receive_datagram(p2.i.datagrams_to_send()[0].data, ("192.0.2.1", 500), 0.0, local_port=500)
    mm5 = [d for s, d in pair.wire if s == "i"][2]
    p2.r.receive_datagram(mm5, ("192.0.2.1", 500), 0.0, local_port=500)
    assert p2.r.stats["dropped"] == 1 and p2.r.p1_step == "mm3"


def test_replayed_quick_mode_is_dropped() -> None:
    pair = Pair(*configs())
    _up(pair)
    qm1 = next(d for s, d in pair.wire if s == "i" and decode_header(d).exchange == Exchange.QUICK)
    pair.r.receive_datagram(qm1, ("192.0.2.1", 500), 1.0, local_port=500)
    assert pair.r.stats["dropped: quick mode message for a finished exchange (replayed)"] == 1
    assert pair.r.datagrams_to_send() == [] and len(pair.r.children) == 1


def test_retransmits_then_failure_and_duplicate_answered_alike() -> None:
    pair = Pair(*configs())
    pair.i.initiate(0.0)
    first = pair.i.datagrams_to_send()[0].data
    t = pair.i.next_timer()
    assert t == pytest.approx(pair.i.config.retransmit_timeout)
    pair.i.handle_timer(t)
    assert [d.data for d in pair.i.datagrams_to_send()] == [first]
    for _ in range(10):
        nt = pair.i.next_timer()
        if nt is None:
            break
        pair.i.handle_timer(nt)
    assert [type(e) for e in pair.i.events()] == [IsakmpSaFailed] and pair.i.state == "dead"
    # the responder answers a retransmitted message 1 with the same message 2, and takes no second state
    r = Ikev1SA(configs()[1], initiator=False, local=("192.0.2.2", 500), remote=("192.0.2.1", 500))
    r.receive_datagram(first, ("192.0.2.1", 500), 0.0, local_port=500)
    r.receive_datagram(first, ("192.0.2.1", 500), 0.5, local_port=500)
    out = [d.data for d in r.datagrams_to_send()]
    assert len(out) == 2 and out[0] == out[1] and r.stats["peer_retransmits"] == 1


@pytest.mark.parametrize("who", ["i", "r"])
def test_delete_child_then_isakmp(who: str) -> None:
    pair = Pair(*configs())
    ci, cr = _up(pair)
    us, peer = (pair.i, "r") if who == "i" else (pair.r, "i")
    mine = ci if who == "i" else cr
    us.delete_child(mine.inbound.spi)
    pair.run()
    gone = pair.of(peer, ChildSaDeleted)
    assert [(g.spi_in, g.spi_out) for g in gone] == [(mine.outbound.spi, mine.inbound.spi)]
    us.delete()
    pair.run()
    assert pair.of(peer, IsakmpSaDeleted) and (pair.i.state, pair.r.state) == ("dead", "dead")


def test_dpd_r_u_there_is_acknowledged() -> None:
    pair = Pair(*configs())
    _up(pair)
    seq = pair.r.dpd()
    pair.run()
    assert [e.sequence for e in pair.of("r", DpdAck)] == [seq] and pair.i.stats["dpd_answered"] == 1


def test_second_quick_mode_over_the_same_isakmp_sa() -> None:
    pair = Pair(*configs(esp="aes128-sha256-ecp256"))
    first, _ = _up(pair)
    pair.r.start_quick(1.0)
    pair.run()
    kids_i = pair.of("i", ChildSaEstablished)
    assert len(kids_i) == 2 and kids_i[1].inbound.spi != first.inbound.spi
    assert kids_i[1].inbound.enc_key != first.inbound.enc_key
    assert len(pair.i.children) == 2 and len(pair.r.children) == 2


def test_corrupted_messages_at_every_step_are_dropped_without_an_exception() -> None:
    """Every message of a full exchange, bit-flipped, into SAs waiting at each step (a fresh responder, and
    the established pair): receive_datagram counts a drop or accepts what still verifies, never raises."""
    import random
    rng = random.Random(2409)
    pair = Pair(*configs(esp="aes128-sha256-modp2048"))
    _up(pair)
    for sender, data in pair.wire:
        target = pair.r if sender == "i" else pair.i
        for _ in range(40):
            d = bytearray(data)
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            before = target.stats["dropped"]
            target.receive_datagram(bytes(d), ("192.0.2.9", 500), 5.0, local_port=500)
            assert target.stats["dropped"] in (before, before + 1)
        fresh = Ikev1SA(configs(esp="aes128-sha256-modp2048")[1], initiator=False, local=("192.0.2.2", 500),
                        remote=("192.0.2.1", 500))
        fresh.receive_datagram(data[:rng.randrange(len(data))], ("192.0.2.1", 500), 0.0, local_port=500)
        assert fresh.state == "created" and fresh.stats["dropped"] == 1
    assert pair.i.established and pair.r.established and len(pair.i.children) == 1


@pytest.mark.parametrize("who", ["i", "r"])
def test_quick_mode_rekey_makes_before_it_breaks(who: str) -> None:
    pair = Pair(*configs(esp="aes128-sha256-modp2048"))
    ci, cr = _up(pair)
    us, peer = (pair.i, "r") if who == "i" else (pair.r, "i")
    old = ci if who == "i" else cr
    n_wire = len(pair.wire)
    us.rekey_child(old.inbound.spi, 10.0)
    pair.run()
    new = [e for e in pair.of(who, ChildSaEstablished) if e.rekey_of == old.inbound.spi]
    assert len(new) == 1 and new[0].inbound.spi != old.inbound.spi
    assert [(g.spi_in, g.spi_out) for g in pair.of(peer, ChildSaDeleted)] == [(old.outbound.spi, old.inbound.spi)]
    assert [c.inbound.spi for c in us.children] == [new[0].inbound.spi] and len(pair.i.children) == 1
    # on the wire: the three quick mode messages first, the Delete of the old pair after them
    exchanges = [decode_header(d).exchange for _, d in pair.wire[n_wire:]]
    assert exchanges == [Exchange.QUICK] * 3 + [Exchange.INFORMATIONAL]


def test_half_open_responder_is_dropped_after_its_timeout() -> None:
    pair = Pair(*configs())
    pair.i.initiate(0.0)
    r = pair.r
    r.receive_datagram(pair.i.datagrams_to_send()[0].data, ("192.0.2.1", 500), 0.0, local_port=500)
    assert r.state == "connecting" and r.next_timer() == pytest.approx(r.config.half_open_timeout)
    r.handle_timer(r.config.half_open_timeout - 1)
    assert r.state == "connecting"
    r.handle_timer(r.config.half_open_timeout)
    assert r.state == "dead" and [type(e) for e in r.events()] == [IsakmpSaFailed]
    # an established SA has no such timer
    pair = Pair(*configs())
    _up(pair)
    assert pair.r.next_timer() is None and pair.i.next_timer() is None
    pair.r.handle_timer(1e6)
    assert pair.r.established
