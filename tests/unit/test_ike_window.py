"""Message ID windows (RFC 7296 §2.3) in the sans-IO core: SET_WINDOW_SIZE in IKE_AUTH, several of
our requests in flight as the peer's window allows, requests accepted out of order within our window,
answers cached per Message ID (a retransmission gets the same bytes again), requests outside the
window dropped, and exchanges that must run alone (IKE rekey) waiting for the others."""

from __future__ import annotations

import pytest
from support.ike_pair import PSK, Pair, assert_esp_works, child

from control.ike.config import Identity, IkeConfig
from control.ike.constants import ExchangeType, Flag, Notify
from control.ike.events import ChildSaEstablished, IkeSaRekeyed, State
from control.ike.message import Message, parse_header
from control.ike.window import ResponderWindow, may_send, parse_window_notify, window_notify_data

A, B = ("192.0.2.1", 500), ("198.51.100.2", 500)
PAIRS = [("10.1.0.0/16", "10.2.0.0/16"), ("10.10.0.0/16", "10.20.0.0/16"), ("10.11.0.0/16", "10.21.0.0/16"),
         ("10.12.0.0/16", "10.22.0.0/16")]


def kids(side):
    return [child(f"c{i}", local=lo, remote=re) if side == "a" else child(f"c{i}", local=re, remote=lo)
            for i, (lo, re) in enumerate(PAIRS)]


def pair(win_a=1, win_b=1) -> Pair:
    ca = IkeConfig(Identity.from_string("a.example"), PSK, Identity.from_string("b.example"),
                   children=kids("a")[:1], window_size=win_a)
    cb = IkeConfig(Identity.from_string("b.example"), PSK, Identity.from_string("a.example"),
                   children=kids("b"), window_size=win_b)
    p = Pair(ca, cb).run()
    p.clear()
    return p


def test_responder_window_unit():
    w = ResponderWindow(3)
    assert [w.acceptable(m) for m in range(5)] == [True, True, True, False, False]
    w.answered(2, b"r2", ["d2"])
    assert not w.acceptable(2) and w.cached(2) == (b"r2", ["d2"]) and w.next == 0
    w.answered(0, b"r0", ["d0"])
    assert w.next == 1 and w.acceptable(3) is True and w.acceptable(4) is False   # 1 still open: [1, 4)
    w.answered(1, b"r1", ["d1"])
    assert w.next == 3 and [w.acceptable(m) for m in (3, 4, 5, 6)] == [True, True, True, False]
    assert w.cached(0) == (b"r0", ["d0"])           # still within reach of a retransmission
    w.answered(3, b"r3", [])
    w.answered(4, b"r4", [])
    assert w.cached(0) is None and w.cached(1) is None and w.cached(2) is not None and len(w) == 3
    assert may_send(7, [5, 6], 3) and not may_send(8, [5, 6], 3) and may_send(0, [], 1)
    assert parse_window_notify(window_notify_data(5)) == 5 and parse_window_notify(b"\0\0\0\0") is None
    assert parse_window_notify(b"\0\0\1") is None and parse_window_notify(window_notify_data(10**6)) == 64


def test_set_window_size_exchanged_in_ike_auth():
    p = pair(4, 8)
    a, b = p.ike("a"), p.ike("b")
    assert a.peer_window == 8 and b.peer_window == 4
    q = pair()
    assert q.ike("a").peer_window == q.ike("b").peer_window == 1       # none sent: the default


def _requests(sa) -> list:
    return [d for d in sa.datagrams_to_send() if not parse_header(d.data).flags & Flag.RESPONSE]


@pytest.mark.parametrize("win_b,expect", [(4, 4), (2, 2), (1, 1)])
def test_initiator_keeps_up_to_the_peer_window_in_flight(win_b, expect):
    p = pair(1, win_b)
    a = p.ike("a")
    for c in kids("a")[1:]:
        a.create_child(p.now, c)
    a.dpd(p.now)
    first = _requests(a)
    assert len(first) == expect
    mids = [parse_header(d.data).message_id for d in first]
    assert mids == list(range(mids[0], mids[0] + expect))
    # put them back on the wire and let the exchanges finish: everything is created, in sync
    for d in first:
        p._deliver("b", d.data, d.remote[1])
    p.run()
    est_a = {e.name: e for e in p.of("a", ChildSaEstablished)}
    est_b = {e.name: e for e in p.of("b", ChildSaEstablished)}
    assert set(est_a) == {"c1", "c2", "c3"} == set(est_b)
    for name in est_a:
        assert_esp_works(est_a[name], est_b[name])
    assert a.stats["dpd_answered"] == 1 and not p.ike("b").stats["invalid_message_id"]


def test_requests_out_of_order_and_retransmissions_within_the_window():
    p = pair(1, 4)
    a, b = p.ike("a"), p.ike("b")
    for c in kids("a")[1:]:
        a.create_child(p.now, c)
    reqs = _requests(a)
    assert len(reqs) == 3
    # the third request overtakes the first two; all are accepted and answered
    for d in (reqs[2], reqs[0], reqs[1]):
        b.receive_datagram(d.data, d.remote[1], (A[0], d.remote[1]), p.now)
    answers = b.datagrams_to_send()
    assert len(answers) == 3 and not b.stats["invalid_message_id"]
    by_mid = {parse_header(x.data).message_id: x.data for x in answers}
    # a retransmitted request gets the cached answer, byte for byte
    b.receive_datagram(reqs[0].data, 500, (A[0], 500), p.now)
    (again,) = b.datagrams_to_send()
    assert again.data == by_mid[parse_header(reqs[0].data).message_id]
    assert b.stats["retransmitted_requests"] == 1
    # answers reach a in any order too
    for mid in sorted(by_mid, reverse=True):
        a.receive_datagram(by_mid[mid], 500, (B[0], 500), p.now)
    assert len(a.children) == 4 and len(b.children) == 4
    assert not a.stats["unexpected_response"]


def test_request_outside_the_window_is_dropped():
    p = pair(1, 2)
    a, b = p.ike("a"), p.ike("b")
    a.peer_window = 3                   # a misbehaving peer sends beyond the window we advertised
    for c in kids("a")[1:]:
        a.create_child(p.now, c)
    reqs = _requests(a)
    assert len(reqs) == 3
    b.receive_datagram(reqs[2].data, 500, (A[0], 500), p.now)
    assert b.stats["invalid_message_id"] == 1 and not b.datagrams_to_send()
    for d in reqs[:2]:
        b.receive_datagram(d.data, 500, (A[0], 500), p.now)
    assert len(b.datagrams_to_send()) == 2
    b.receive_datagram(reqs[2].data, 500, (A[0], 500), p.now)      # now inside: answered
    assert len(b.datagrams_to_send()) == 1


def test_lost_answer_retransmitted_alone():
    p = pair(1, 4)
    a = p.ike("a")
    lost = {"mid": None}

    def drop(side, n, data):
        h = parse_header(data)
        if side == "b" and h.flags & Flag.RESPONSE and h.exchange == ExchangeType.CREATE_CHILD_SA \
                and lost["mid"] is None:
            lost["mid"] = h.message_id
            return True
        return False
    p.drop = drop
    for c in kids("a")[1:]:
        a.create_child(p.now, c)
    p.run(until=p.now + 10)
    assert len(a.children) == 4 and a.stats["retransmits"] == 1
    assert p.ike("b").stats["retransmitted_requests"] == 1


def test_ike_rekey_waits_for_the_window_to_drain():
    p = pair(1, 4)
    a = p.ike("a")
    a.create_child(p.now, kids("a")[1])
    a.rekey_ike(p.now)
    a.create_child(p.now, kids("a")[2])
    first = _requests(a)
    assert [Message.parse(d.data).exchange for d in first] == [ExchangeType.CREATE_CHILD_SA]
    for d in first:
        p._deliver("b", d.data, d.remote[1])
    p.run()
    assert p.of("a", IkeSaRekeyed)
    new = p.ike("a")
    assert new is not a and a.state == State.DEAD
    assert {c.config.name for c in new.children} == {"c0", "c1", "c2"}


def test_window_notify_payload():
    from control.ike.sa import IkeSA
    from control.ike.window import window_payloads
    ca = IkeConfig(Identity.from_string("a.example"), PSK, Identity.from_string("b.example"),
                   children=kids("a")[:1], window_size=5)
    (n,) = window_payloads(IkeSA(ca, initiator=True, local=A, remote=B))
    assert n.notify_type == Notify.SET_WINDOW_SIZE and n.data == (5).to_bytes(4, "big")
    ca.window_size = 1
    assert window_payloads(IkeSA(ca, initiator=True, local=A, remote=B)) == []
    with pytest.raises(ValueError, match="window_size"):
        IkeConfig(Identity.from_string("a.example"), PSK, window_size=0)
