"""CREATE_CHILD_SA and INFORMATIONAL between two of our own IKE SAs, in process.

``Pair`` keeps every IKE SA of each side, routes datagrams by SPI (an IKE rekey
adds SAs through ``IkeSaRekeyed``), advances a virtual clock to the next timer
when nothing is in flight, and checks CHILD SAs with a real ESP engine.
"""

from __future__ import annotations

import gc
import os
import random
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ike_pair import A, B, Pair, assert_esp_works, cfgs, child, up

from control.ike.collision import lowest_nonce_wins
from control.ike.constants import ExchangeType, Flag, Notify, PayloadType
from control.ike.crypto import derive_rekeyed_ike_keys, prf, prf_len
from control.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildStatus,
    IkeSaDeleted,
    IkeSaFailed,
    IkeSaRekeyed,
    State,
)
from control.ike.message import Message
from control.ike.payloads import KEPayload, NotifyPayload, UnknownPayload
from control.ike.sa import IkeSA


def current_children(p: Pair, side: str) -> list:
    return [c for s in p.live(side) for c in s.children]


def check_in_sync(p: Pair) -> None:
    """Each side has the same CHILD SAs (SPIs crossed) and ESP works on the newest pair of each name."""
    ca, cb = current_children(p, "a"), current_children(p, "b")
    assert sorted((c.spi_in, c.spi_out) for c in ca) == sorted((c.spi_out, c.spi_in) for c in cb)
    assert all(c.status == ChildStatus.INSTALLED for c in ca + cb)


def newest(p: Pair, side: str, name: str = "net") -> ChildSaEstablished:
    return [e for e in p.events[side] if isinstance(e, ChildSaEstablished) and e.name == name][-1]


# -- CREATE_CHILD_SA: new CHILD SAs ------------------------------------------------------------

@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256-sha256-x25519", "aes256gcm16-ecp384-esn"])
def test_create_second_child(esp: str) -> None:
    p = up(esp=esp)
    a = p.ike("a")
    a.create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16", esp=esp))
    p.run()
    (ea,), (eb,) = p.of("a", ChildSaEstablished), p.of("b", ChildSaEstablished)
    assert ea.name == eb.name == "second" and ea.rekey_of is None
    assert len(a.children) == len(p.ike("b").children) == 2
    assert_esp_works(ea, eb)
    check_in_sync(p)


def test_create_child_refused_keeps_ike_sa() -> None:
    p = up()
    p.ike("a").create_child(p.now, child("nope", local="172.16.0.0/12", remote="10.20.0.0/16"))
    p.run()
    assert p.of("a", ChildSaFailed)[0].notify == Notify.TS_UNACCEPTABLE
    assert p.of("b", ChildSaFailed)[0].notify == Notify.TS_UNACCEPTABLE
    assert p.ike("a").state == State.ESTABLISHED and len(p.ike("a").children) == 1


def test_create_child_invalid_ke_retry() -> None:
    # we guess x25519 for PFS, the responder insists on ECP-256: a second exchange with the right KE
    p = up(esp="aes128gcm16-x25519-ecp256", esp_b="aes128gcm16-ecp256")
    p.ike("a").create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16",
                                         esp="aes128gcm16-x25519-ecp256"))
    p.run()
    (ea,), (eb,) = p.of("a", ChildSaEstablished), p.of("b", ChildSaEstablished)
    assert p.ike("a").task_manager.next_mid == 4        # AUTH + INIT, refused CREATE_CHILD_SA, the retried one
    assert_esp_works(ea, eb)


# -- CHILD SA rekey --------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("esp", ["aes128gcm16", "aes128gcm16-x25519"])
def test_child_rekey(side: str, esp: str) -> None:
    p = up(esp=esp)
    other = "b" if side == "a" else "a"
    sa = p.ike(side)
    old = sa.children[0]
    old_in, old_out = old.spi_in, old.spi_out
    sa.rekey_child(p.now, old_in)
    p.run()
    # the new pair comes first, naming the pair it replaces; then the old one is deleted on both sides
    (new_s,), (new_o,) = p.of(side, ChildSaEstablished), p.of(other, ChildSaEstablished)
    assert new_s.rekey_of == old_in and new_o.rekey_of == old_out
    assert p.events[side].index(new_s) < p.events[side].index(p.of(side, ChildSaDeleted)[0])
    assert [(d.spi_in, d.spi_out) for d in p.of(side, ChildSaDeleted)] == [(old_in, old_out)]
    assert [(d.spi_in, d.spi_out) for d in p.of(other, ChildSaDeleted)] == [(old_out, old_in)]
    assert new_s.inbound.spi not in (old_in, old_out)
    assert_esp_works(new_s, new_o)
    check_in_sync(p)
    assert len(current_children(p, "a")) == 1


def test_child_rekey_keys_differ_and_pfs_changes_keymat() -> None:
    p = up(esp="aes128gcm16-x25519")
    first = p.ike("a").children[0]
    p.ike("a").rekey_child(p.now, first.spi_in)
    p.run()
    new = p.of("a", ChildSaEstablished)[0]
    assert new.inbound.enc_key != new.outbound.enc_key


@pytest.mark.parametrize("trial", range(4))
def test_simultaneous_child_rekey(trial: int) -> None:
    p = up()
    old = p.ike("a").children[0]
    p.ike("a").rekey_child(p.now, old.spi_in)
    p.ike("b").rekey_child(p.now, old.spi_out)       # both requests cross on the wire
    p.run()
    sa_a, sa_b = p.ike("a"), p.ike("b")
    won = sa_a.stats["child_rekey_collision_won"] + sa_b.stats["child_rekey_collision_won"]
    lost = sa_a.stats["child_rekey_collision_lost"] + sa_b.stats["child_rekey_collision_lost"]
    assert (won, lost) == (1, 1)
    # two new pairs were made, the redundant one and the old one were deleted: one pair left
    assert len(p.of("a", ChildSaEstablished)) == 2 and len(p.of("a", ChildSaDeleted)) == 2
    (ca,), (cb,) = sa_a.children, sa_b.children
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    assert old.spi_in not in (ca.spi_in, ca.spi_out)
    survivor_a = next(e for e in p.of("a", ChildSaEstablished) if e.inbound.spi == ca.spi_in)
    survivor_b = next(e for e in p.of("b", ChildSaEstablished) if e.inbound.spi == cb.spi_in)
    assert_esp_works(survivor_a, survivor_b)


def test_lowest_nonce_ordering() -> None:
    assert lowest_nonce_wins((b"\x01\xff", b"\x09"), (b"\x02", b"\x03"))
    assert lowest_nonce_wins((b"\x05", b"\x09"), (b"\x05\x00", b"\x07"))     # a prefix is lower
    assert not lowest_nonce_wins((b"\x05\x00", b"\x09"), (b"\x05", b"\x07"))


def test_rekey_of_unknown_child_is_child_sa_not_found() -> None:
    p = up()
    a = p.ike("a")
    c = a.children[0]
    c.spi_in ^= 0x1000          # pretend ours was a different SA: the peer does not know it
    a.rekey_child(p.now, c.spi_in)
    p.run()
    assert p.of("a", ChildSaFailed)[0].notify == Notify.CHILD_SA_NOT_FOUND
    assert a.state == State.ESTABLISHED


def test_child_rekey_timer() -> None:
    ca, cb = cfgs()
    ca.children[0].rekey_time = 100.0
    p = Pair(ca, cb).run()
    p.clear()
    p.run(until=350.0)
    assert len(p.of("a", ChildSaEstablished)) == 3 and len(p.of("b", ChildSaDeleted)) == 3
    check_in_sync(p)


# -- IKE SA rekey ---------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["a", "b"])
def test_ike_rekey(side: str) -> None:
    p = up(ike="aes256-sha384-ecp384")
    other = "b" if side == "a" else "a"
    old = p.ike(side)
    old_spis = (old.spi_i, old.spi_r)
    child_spi = old.children[0].spi_in
    old.rekey_ike(p.now)
    p.run()
    new_s, new_o = p.ike(side), p.ike(other)
    assert new_s is not old and (new_s.spi_i, new_s.spi_r) == (new_o.spi_i, new_o.spi_r)
    assert new_s.spi_i not in old_spis and new_s.spi_r not in old_spis
    assert new_s.initiator and not new_o.initiator          # the rekey's initiator is the new initiator
    assert new_s.children[0].spi_in == child_spi and not old.children
    assert old.state == State.DEAD and len(p.live(side)) == len(p.live(other)) == 1
    for s in (side, other):
        (ev,) = p.of(s, IkeSaRekeyed)
        assert (ev.old_spi_i, ev.old_spi_r) == old_spis and not ev.redundant
        (gone,) = p.of(s, IkeSaDeleted)
        assert gone.rekeyed and not p.of(s, ChildSaDeleted)
    assert new_s.keys.sk_d != old.keys.sk_d
    # the new IKE SA works: Message IDs start at 0, a CHILD rekey runs on it
    assert new_s.task_manager.next_mid == 0
    new_o.rekey_child(p.now, new_o.children[0].spi_in)
    p.run()
    assert_esp_works(newest(p, "a"), newest(p, "b"))
    check_in_sync(p)


def test_rekeyed_key_schedule_matches_rfc_formula() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    from control.ike.crypto import IkeSuite
    suite = IkeSuite(20, 256, 7, 0, 31)     # AES-GCM-16-256, PRF_HMAC_SHA2_512, x25519
    old_sk_d, ni, nr, g, si, sr = os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32), \
        os.urandom(8), os.urandom(8)
    keys = derive_rekeyed_ike_keys(5, old_sk_d, suite, ni, nr, g, si, sr)   # old PRF: SHA2-256
    seed = prf(5, old_sk_d, g + ni + nr)
    want = HKDFExpand(hashes.SHA512(), 3 * 64 + 2 * 36, ni + nr + si + sr).derive(seed)
    assert keys.sk_d == want[:prf_len(7)] and keys.sk_ei == want[64:100] and keys.sk_pr == want[-64:]


def test_ike_rekey_timer_and_children_follow() -> None:
    ca, cb = cfgs(rekey_time=50.0)
    cb.rekey_time = 0.0
    p = Pair(ca, cb).run()
    p.clear()
    p.run(until=120.0)
    assert len(p.of("a", IkeSaRekeyed)) == 2 and len(p.live("a")) == 1
    check_in_sync(p)
    # the same timer on both ends: every rekey collides, and each collision settles on one IKE SA
    p = Pair(*cfgs(rekey_time=50.0)).run()
    p.clear()
    p.run(until=120.0)
    assert len([e for e in p.of("a", IkeSaRekeyed) if not e.redundant]) == 2
    assert len(p.live("a")) == len(p.live("b")) == 1
    check_in_sync(p)


@pytest.mark.parametrize("trial", range(3))
def test_simultaneous_ike_rekey(trial: int) -> None:
    p = up()
    a, b = p.ike("a"), p.ike("b")
    a.rekey_ike(p.now)
    b.rekey_ike(p.now)
    p.run()
    la, lb = p.live("a"), p.live("b")
    assert len(la) == len(lb) == 1, (la, lb)
    assert (la[0].spi_i, la[0].spi_r) == (lb[0].spi_i, lb[0].spi_r)
    assert la[0] is not a and a.state == b.state == State.DEAD
    assert len(la[0].children) == len(lb[0].children) == 1
    won = a.stats["ike_rekey_collision_won"] + b.stats["ike_rekey_collision_won"]
    lost = a.stats["ike_rekey_collision_lost"] + b.stats["ike_rekey_collision_lost"]
    assert (won, lost) == (1, 1)
    for s in ("a", "b"):
        assert all(e.rekeyed for e in p.of(s, IkeSaDeleted)) and len(p.of(s, IkeSaDeleted)) == 2
        assert not p.of(s, ChildSaDeleted) and not p.of(s, IkeSaFailed)
    la[0].rekey_child(p.now, la[0].children[0].spi_in)
    p.run()
    check_in_sync(p)


# -- INFORMATIONAL: Delete, DPD -------------------------------------------------------------

@pytest.mark.parametrize("side", ["a", "b"])
def test_delete_child(side: str) -> None:
    p = up()
    other = "b" if side == "a" else "a"
    sa = p.ike(side)
    c = sa.children[0]
    sa.delete_child(p.now, c.spi_in)
    p.run()
    assert [(d.spi_in, d.spi_out) for d in p.of(side, ChildSaDeleted)] == [(c.spi_in, c.spi_out)]
    assert [(d.spi_in, d.spi_out) for d in p.of(other, ChildSaDeleted)] == [(c.spi_out, c.spi_in)]
    assert not p.ike("a").children and not p.ike("b").children
    assert p.ike("a").state == State.ESTABLISHED


def test_simultaneous_child_delete() -> None:
    p = up()
    c = p.ike("a").children[0]
    p.ike("a").delete_child(p.now, c.spi_in)
    p.ike("b").delete_child(p.now, c.spi_out)
    p.run()
    assert len(p.of("a", ChildSaDeleted)) == len(p.of("b", ChildSaDeleted)) == 1
    assert not p.ike("a").children and not p.ike("b").children


@pytest.mark.parametrize("side", ["a", "b"])
def test_delete_ike(side: str) -> None:
    p = up()
    p.ike(side).delete(p.now)
    p.run()
    for s in ("a", "b"):
        assert not p.live(s)
        assert len(p.of(s, ChildSaDeleted)) == 1 and len(p.of(s, IkeSaDeleted)) == 1
        assert not p.of(s, IkeSaDeleted)[0].rekeyed and not p.of(s, IkeSaFailed)


def test_simultaneous_ike_delete() -> None:
    p = up()
    p.ike("a").delete(p.now)
    p.ike("b").delete(p.now)
    p.run(until=60.0)
    assert not p.live("a") and not p.live("b")
    assert len(p.of("a", IkeSaDeleted)) == len(p.of("b", IkeSaDeleted)) == 1


def test_dpd_liveness_and_dead_peer() -> None:
    ca, cb = cfgs(dpd_delay=10.0)
    cb.dpd_delay = 0.0
    p = Pair(ca, cb).run()
    p.run(until=35.0)
    a = p.ike("a")
    assert a.stats["dpd_sent"] == a.stats["dpd_answered"] == 3
    assert p.ike("b").stats["dpd_received"] == 3
    # the peer vanishes: DPD retransmits, gives up, and the IKE SA and its CHILD SAs go
    p.drop = lambda side, n, data: side == "a"
    p.clear()
    p.run(until=200.0)
    assert a.state == State.DEAD
    (f,) = p.of("a", IkeSaFailed)
    assert "INFORMATIONAL" in f.reason and len(p.of("a", ChildSaDeleted)) == 1


def test_lost_create_child_response_answered_from_cache() -> None:
    p = up()
    drops = {"n": 0}

    def drop(side, n, data):
        if side == "b" and drops["n"] == 0:
            drops["n"] += 1
            return True
        return False
    p.drop = drop
    p.ike("a").create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16"))
    p.run(until=10.0)
    assert p.ike("b").stats["retransmitted_requests"] == 1
    assert len(p.of("a", ChildSaEstablished)) == len(p.of("b", ChildSaEstablished)) == 1


def test_retransmitted_create_child_request_keeps_one_child() -> None:
    p = up()
    a, b = p.ike("a"), p.ike("b")
    a.create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16"))
    (req,) = a.datagrams_to_send()
    b.receive_datagram(req.data, 500, A, p.now)
    b.receive_datagram(req.data, 500, A, p.now)
    assert len(b.datagrams_to_send()) == 2 and len(b.children) == 2


# -- answering what cannot be processed ------------------------------------------------------

def _protected_request(sa: IkeSA, payloads, mid: int, exchange=ExchangeType.INFORMATIONAL) -> bytes:
    msg = Message(sa.spi_i, sa.spi_r, exchange, Flag.INITIATOR if sa.initiator else 0, mid)
    return sa.cipher_out.protect(msg, payloads)


def test_unsupported_critical_payload_is_answered() -> None:
    p = up()
    a, b = p.ike("a"), p.ike("b")
    data = _protected_request(a, [UnknownPayload(200, b"x", critical=True)], b.task_manager.peer_mid)
    b.receive_datagram(data, 500, A, p.now)
    (reply,) = b.datagrams_to_send()
    msg = a.decode(reply.data)
    (n,) = msg.notifies()
    assert n.notify_type == Notify.UNSUPPORTED_CRITICAL_PAYLOAD and n.data == bytes([200])
    assert msg.is_response and b.state == State.ESTABLISHED
    assert b.stats["answered_unsupported_critical_payload"] == 1
    # a tampered copy is dropped without an answer
    bad = bytearray(_protected_request(a, [UnknownPayload(200, b"x", critical=True)], b.task_manager.peer_mid))
    bad[-1] ^= 1
    b.receive_datagram(bytes(bad), 500, A, p.now)
    assert not b.datagrams_to_send() and b.stats["integrity_failed"] == 1


def test_invalid_syntax_inside_sk_is_answered() -> None:
    p = up()
    a, b = p.ike("a"), p.ike("b")
    # a Notify payload of 2 bytes is malformed, but protected: the responder answers INVALID_SYNTAX
    msg = Message(a.spi_i, a.spi_r, ExchangeType.INFORMATIONAL, Flag.INITIATOR, b.task_manager.peer_mid)
    inner_bad = [UnknownPayload(PayloadType.NOTIFY, b"\x00\x00", False)]
    data = a.cipher_out.protect(msg, inner_bad)
    b.receive_datagram(bytes(data), 500, A, p.now)
    (reply,) = b.datagrams_to_send()
    (n,) = a.decode(reply.data).notifies()
    assert n.notify_type == Notify.INVALID_SYNTAX and b.state == State.ESTABLISHED


def test_invalid_major_version_answered() -> None:
    ca, cb = cfgs()
    r = IkeSA(cb, initiator=False, local=B, remote=A)
    init = Message(os.urandom(8), bytes(8), ExchangeType.IKE_SA_INIT, Flag.INITIATOR, 0,
                   [NotifyPayload(Notify.COOKIE, b"x")]).serialize()
    v3 = init[:17] + bytes([0x30]) + init[18:]
    r.receive_datagram(v3, 500, A, 0.0)
    (reply,) = r.datagrams_to_send()
    m = Message.parse(reply.data)
    assert m.is_response and m.notifies()[0].notify_type == Notify.INVALID_MAJOR_VERSION
    assert reply.data[17] == 0x20 and r.stats["invalid_major_version"] == 1
    # IKEv1 is not answered (RFC 7296 §2.5 answers higher versions only)
    r.receive_datagram(init[:17] + bytes([0x10]) + init[18:], 500, A, 0.0)
    assert not r.datagrams_to_send()


def test_init_with_unsupported_critical_payload_answered_in_clear() -> None:
    ca, cb = cfgs()
    r = IkeSA(cb, initiator=False, local=B, remote=A)
    init = Message(os.urandom(8), bytes(8), ExchangeType.IKE_SA_INIT, Flag.INITIATOR, 0,
                   [UnknownPayload(222, b"", critical=True), KEPayload(31, bytes(32))]).serialize()
    r.receive_datagram(init, 500, A, 0.0)
    (reply,) = r.datagrams_to_send()
    m = Message.parse(reply.data)
    assert m.spi_r == bytes(8) and m.notifies()[0].notify_type == Notify.UNSUPPORTED_CRITICAL_PAYLOAD
    assert r.state == State.DEAD


def test_half_open_responder_times_out() -> None:
    ca, cb = cfgs()
    p = Pair(ca, cb, drop=lambda side, n, data: side == "a" and data[18] == ExchangeType.IKE_AUTH)
    p.run(until=100.0)
    r = p.sas["b"][0]
    assert r.state == State.DEAD and r.stats["half_open_timeout"] == 1


# -- the state machine under random operations -------------------------------------------------

OPS = ["rekey_child", "rekey_ike", "create", "delete_child", "dpd", "garbage", "drop_next", "wait"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(OPS), st.sampled_from(["a", "b"]), st.integers(0, 2**16)),
                max_size=8))
def test_fuzz_operations(ops) -> None:
    """Random exchanges from both sides, lost datagrams and garbage never raise, and whatever
    survives stays consistent: both sides agree on the IKE SA and the CHILD SAs."""
    p = up()
    rng = random.Random(len(ops))
    dropping = {"n": 0}

    def drop(side, n, data):
        if dropping["n"]:
            dropping["n"] -= 1
            return True
        return False
    p.drop = drop
    for op, side, n in ops:
        sas = [s for s in p.live(side) if s.state == State.ESTABLISHED]
        if not sas:
            break
        sa = sas[0]
        if op == "rekey_child" and sa.children:
            sa.rekey_child(p.now, sa.children[n % len(sa.children)].spi_in)
        elif op == "rekey_ike":
            sa.rekey_ike(p.now)
        elif op == "create":
            sa.create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16")
                            if side == "a" else child("second", local="10.20.0.0/16", remote="10.10.0.0/16"))
        elif op == "delete_child" and sa.children:
            sa.delete_child(p.now, sa.children[n % len(sa.children)].spi_in)
        elif op == "dpd":
            sa.dpd(p.now)
        elif op == "garbage":
            blob = bytearray(sa.spi_i + sa.spi_r + os.urandom(n % 120 + 12))
            blob[17] = 0x20
            sa.receive_datagram(bytes(blob), 500, A, p.now)
        elif op == "drop_next":
            dropping["n"] = 1
        if rng.random() < 0.5:
            p.pump()
    p.run(until=p.now + 300)
    la, lb = p.live("a"), p.live("b")
    if la and lb and all(s.state == State.ESTABLISHED for s in la + lb):
        assert {(s.spi_i, s.spi_r) for s in la} == {(s.spi_i, s.spi_r) for s in lb}
        check_in_sync(p)


def test_an_ike_sa_is_freed_without_the_cycle_collector():
    """A busy responder makes and drops IKE SAs by the thousand: none may sit in a reference cycle (the task
    manager is handed its IKE SA per call and keeps no reference back), or each waits for the collector."""
    p = Pair(*cfgs()).run()
    p.ike("a").dpd(p.now)
    p.run()
    refs = [weakref.ref(s) for side in ("a", "b") for s in p.sas[side]]
    gc.disable()
    try:
        del p
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()
