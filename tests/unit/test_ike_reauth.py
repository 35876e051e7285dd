"""IKE SA lifetimes in the sans-IO core, on a virtual clock: make-before-break reauthentication
(RFC 7296 §2.8.3) from either side, the hard expiry (swanctl's over_time) when no replacement comes,
jitter, NAT-T keepalives (RFC 3948 §2.3), and the Delete for a CHILD SA refused after IKE_AUTH."""

from __future__ import annotations

import pytest
from support.ike_pair import PSK, A, B, Pair, assert_esp_works, child

from control.ike.config import Identity, IkeConfig
from control.ike.constants import NATT_KEEPALIVE, ExchangeType
from control.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaReauthenticated,
    IkeSaReauthStarted,
    State,
)
from control.ike.message import parse_header
from control.ike.tasks.ike_reauth import REAUTH_RETRY


def cfg_pair(a_kw=None, b_kw=None, two_children=True):
    kids_a = [child()] + ([child("second", local="10.10.0.0/16", remote="10.20.0.0/16")] if two_children else [])
    kids_b = [child(local="10.2.0.0/16", remote="10.1.0.0/16"),
              child("second", local="10.20.0.0/16", remote="10.10.0.0/16")]
    ca = IkeConfig(Identity.from_string("a.example"), PSK, Identity.from_string("b.example"), children=kids_a,
                   **(a_kw or {}))
    cb = IkeConfig(Identity.from_string("b.example"), PSK, Identity.from_string("a.example"), children=kids_b,
                   **(b_kw or {}))
    return ca, cb


class LifePair(Pair):
    """``Pair`` where either side answers new IKE_SA_INIT requests (a reauthentication by b makes b the
    initiator of the new IKE SA), SAs from ``IkeSaReauthStarted`` are routed, keepalives are delivered,
    and every event is recorded with the virtual time it was collected at."""

    answering = ("a", "b")

    def __init__(self, ca, cb, drop=None):
        super().__init__(ca, cb, drop)
        self.timeline: list[tuple[float, str, object]] = []
        self.keepalives = {"a": 0, "b": 0}

    def _deliver(self, to, data, port):
        if data == NATT_KEEPALIVE:
            self.keepalives["b" if to == "a" else "a"] += 1
            there = (B if to == "a" else A)[0]
            for sa in self.live(to):
                if sa.state == State.ESTABLISHED:
                    sa.receive_datagram(data, port, (there, port), self.now)
            return
        super()._deliver(to, data, port)

    def _collected(self, side, e) -> None:
        self.timeline.append((self.now, side, e))
        new = getattr(e, "new_sa", None)
        if new is not None and new not in self.sas[side]:
            self.sas[side].append(new)

    def ikes(self, side):
        return [s for s in self.live(side) if s.state == State.ESTABLISHED]


def _order(p: LifePair, side: str) -> list[str]:
    return [type(e).__name__ for _, s, e in p.timeline if s == side]


@pytest.mark.parametrize("who", ["a", "b"])
def test_reauth_make_before_break(who):
    """The side with reauth_time builds a new IKE SA (new SPIs, a fresh IKE_AUTH), both CHILD SAs are
    re-created naming the pairs they replace, and only then the old IKE SA and its pairs are deleted."""
    kw = {"reauth_time": 100.0, "rand_time": 0.0, "over_time": 30.0}
    ca, cb = cfg_pair(kw if who == "a" else None, kw if who == "b" else None)
    p = LifePair(ca, cb).run()
    old_a, old_b = p.ike("a"), p.ike("b")
    old_pairs = {side: {c.spi_in for c in p.ike(side).children} for side in "ab"}
    assert len(old_pairs["a"]) == 2
    p.clear()
    p.timeline.clear()
    p.run(until=99.0)
    assert not p.timeline, "nothing happens before the reauth time"
    p.run(until=140.0)

    starter = p.of(who, IkeSaReauthStarted)
    assert len(starter) == 1 and starter[0].new_sa.initiator
    new_a, new_b = p.ike("a"), p.ike("b")
    assert old_a.state == old_b.state == State.DEAD
    assert {new_a.spi_i, new_a.spi_r} .isdisjoint({old_a.spi_i, old_a.spi_r})
    assert (new_a.spi_i, new_a.spi_r) == (new_b.spi_i, new_b.spi_r)
    assert new_a.keys.sk_d != old_a.keys.sk_d
    # a fresh IKE_AUTH: the new IKE SA was established, not derived from the old keys
    assert len(p.of("a", IkeSaEstablished)) == 1 and len(p.of("b", IkeSaEstablished)) == 1
    assert p.of(who, IkeSaReauthenticated)[0].old_sa in (old_a, old_b)
    for side in "ab":
        new = p.of(side, ChildSaEstablished)
        assert sorted(e.name for e in new) == ["net", "second"]
        gone = p.of(side, ChildSaDeleted)
        assert {e.spi_in for e in gone} == old_pairs[side]
        if side == who:
            assert {e.rekey_of for e in new} == old_pairs[side]
        # make before break: every new pair is up before any old pair goes
        order = _order(p, side)
        assert max(i for i, n in enumerate(order) if n == "ChildSaEstablished") < \
            min(i for i, n in enumerate(order) if n == "ChildSaDeleted")
        deleted = p.of(side, IkeSaDeleted)
        assert len(deleted) == 1 and deleted[0].spi_i == old_a.spi_i
        # the reauthenticating side knows the old IKE SA was replaced; to the other it is a plain Delete
        assert deleted[0].rekeyed == (side == who)
        assert {c.spi_in for c in p.ike(side).children} == {e.inbound.spi for e in new}
    for name in ("net", "second"):
        a = next(e for e in p.of("a", ChildSaEstablished) if e.name == name)
        b = next(e for e in p.of("b", ChildSaEstablished) if e.name == name)
        assert_esp_works(a, b)
    # the new IKE SA has its own reauth time and works (a DPD is answered)
    if who == "a":
        assert 200.0 <= new_a.reauth_at <= 241.0
    new_a.dpd(p.now)
    p.run()
    assert new_a.stats["dpd_answered"] == 1


def test_reauth_jitter_and_hard_expiry_schedule():
    ca, _ = cfg_pair({"reauth_time": 1000.0, "rand_time": 100.0, "rekey_time": 300.0})
    times = set()
    for _ in range(20):
        ca2, cb = cfg_pair({"reauth_time": 1000.0, "rand_time": 100.0, "rekey_time": 300.0})
        p = LifePair(ca2, cb).run()
        s = p.ike("a")
        assert 900.0 <= s.reauth_at <= 1000.0 and 200.0 <= s.rekey_at <= 300.0
        assert s.expire_at == pytest.approx(1000.0 + 100.0)       # over_time: 10 % of the larger time
        times.add(round(s.reauth_at, 3))
    assert len(times) > 10
    assert ca.hard_over_time == 100.0


def test_rekey_keeps_the_reauth_deadline():
    """An IKE rekey renews keys, not the authentication: the new IKE SA inherits the reauth time."""
    ca, cb = cfg_pair({"reauth_time": 500.0, "rekey_time": 100.0, "rand_time": 0.0, "over_time": 50.0})
    p = LifePair(ca, cb).run(until=150.0)
    s = p.ike("a")
    assert s.established_at == pytest.approx(100.0, abs=1)       # the rekeyed SA
    assert s.reauth_at == pytest.approx(500.0) and s.expire_at == pytest.approx(550.0)
    p.run(until=560.0)
    assert p.of("a", IkeSaReauthStarted) and p.ike("a").established_at >= 500.0
    assert not [e for e in p.events["a"] if isinstance(e, IkeSaDeleted) and not e.rekeyed]


def test_hard_expiry_without_replacement():
    """The peer stops answering after set-up: reauth at 100 s fails, is retried, and at the hard
    lifetime (100 + over_time 40) the CHILD SAs are removed at once and a Delete is sent."""
    p = LifePair(*cfg_pair({"reauth_time": 100.0, "rand_time": 0.0, "over_time": 40.0,
                            "retransmit_timeout": 1.0, "retransmit_tries": 2}))
    p.drop = lambda side, n, data: p.now >= 50.0
    p.run()
    old = p.ike("a")
    kids = {c.spi_in for c in old.children}
    p.clear()
    p.run(until=139.0)
    assert old.state == State.ESTABLISHED and {c.spi_in for c in old.children} == kids
    assert old.stats["reauth_started"] >= 2 and old.stats["reauth_failed"] >= 1   # retried after a failure
    assert not p.of("a", ChildSaDeleted)
    p.run(until=140.5)
    gone = [e for t, s, e in p.timeline if s == "a" and isinstance(e, ChildSaDeleted) and e.spi_in in kids]
    assert {e.spi_in for e in gone} == kids and all("hard lifetime" in e.reason for e in gone)
    assert old.stats["hard_expired"] == 1 and not old.children
    assert old.state == State.DELETING
    p.run(until=200.0)
    dead = [e for e in p.of("a", IkeSaDeleted) if e.spi_i == old.spi_i]
    assert old.state == State.DEAD and dead and "hard lifetime" in dead[0].reason and not dead[0].rekeyed
    assert REAUTH_RETRY == 10.0


def test_hard_expiry_after_failed_rekeys():
    """Without reauth_time: the peer refuses our IKE rekey (NO_PROPOSAL_CHOSEN), the IKE SA carries on,
    and at rekey_time + over_time it is deleted (CHILD SAs first, then a Delete the peer answers)."""
    from control.ike.proposals import parse_proposals
    p = LifePair(*cfg_pair({"rekey_time": 100.0, "rand_time": 0.0, "over_time": 20.0}, two_children=False))
    p.run()
    a, b = p.ike("a"), p.ike("b")
    b.config.proposals = parse_proposals("aes256-sha384-ecp384", "ike")     # no rekey will fit
    p.run(until=119.0)
    assert a.stats["ike_rekey_failed"] == 1 and a.state == State.ESTABLISHED and a.children
    p.run(until=125.0)
    assert a.stats["hard_expired"] == 1 and a.state == b.state == State.DEAD
    reasons = [e.reason for e in p.of("a", IkeSaDeleted)]
    assert reasons == ["IKE SA hard lifetime reached without rekey"]
    assert [e.reason for e in p.of("b", IkeSaDeleted)] == ["deleted by the peer"]
    assert all("hard lifetime" in e.reason for e in p.of("a", ChildSaDeleted)) and p.of("a", ChildSaDeleted)


def test_keepalives_behind_nat_only_when_idle():
    """With a NAT on our side (encap fakes one), a 0xFF goes to the peer's NAT-T port after keep_alive
    seconds of silence; the peer counts and ignores it; the side not behind a NAT sends none; other
    traffic (DPD more often than keep_alive) suppresses them."""
    p = LifePair(*cfg_pair({"encap": True, "keep_alive": 5.0}, {"keep_alive": 5.0}, two_children=False))
    p.run()
    a, b = p.ike("a"), p.ike("b")
    assert a.nat_local and not b.nat_local
    t0 = p.now
    p.run(until=t0 + 21.0)
    assert p.keepalives == {"a": 4, "b": 0}
    assert a.stats["keepalives_sent"] == 4 and b.stats["keepalives_received"] == 4
    assert b.state == State.ESTABLISHED and not b.stats["malformed"]

    q = LifePair(*cfg_pair({"encap": True, "keep_alive": 5.0, "dpd_delay": 3.0}, two_children=False))
    q.run()
    q.run(until=q.now + 30.0)
    assert q.keepalives["a"] == 0 and q.ike("a").stats["dpd_sent"] >= 5


def test_keepalive_datagram_shape():
    p = LifePair(*cfg_pair({"encap": True, "keep_alive": 2.0}, two_children=False))
    p.run()
    a = p.ike("a")
    a.handle_timer(p.now + 2.5)
    (d,) = a.datagrams_to_send()
    assert d.data == b"\xff" and d.local_port == 4500 and d.remote == (B[0], 4500)


def test_first_child_refused_after_ike_auth_is_deleted():
    """The responder narrows TSi to something outside what the initiator asked for: the initiator
    refuses that CHILD SA, deletes it with an INFORMATIONAL Delete naming the responder's SPI, and keeps
    the IKE SA; the responder removes its pair."""
    ca, cb = cfg_pair(two_children=False)
    # the responder's "remote" side for this child lies outside the initiator's local_ts
    cb.children = [child(local="10.2.0.0/16", remote="10.0.0.0/8")]
    ca.children = [child(local="10.1.0.0/16", remote="10.2.0.0/16")]
    sent: list[bytes] = []

    def tap(side, n, data):
        if side == "a":
            sent.append(data)
        return False

    p = LifePair(ca, cb, drop=tap)

    # make b widen TSi: it answers with its own remote_ts (10.0.0.0/8) by narrowing against a wider offer
    from control.ike.tasks import ike_auth
    real = ike_auth.narrow
    ike_auth.narrow = lambda offered, ours: list(ours)
    try:
        p.run()
    finally:
        ike_auth.narrow = real
    a, b = p.ike("a"), p.ike("b")
    fail = p.of("a", ChildSaFailed)
    assert fail and "widened" in fail[0].reason
    assert a.stats["child_refused_after_the_fact"] == 1 and not a.children
    est_b = p.of("b", ChildSaEstablished)
    assert len(est_b) == 1
    assert [e.spi_in for e in p.of("b", ChildSaDeleted)] == [est_b[0].inbound.spi] and not b.children
    # the Delete went in an INFORMATIONAL exchange, and the IKE SA survives it
    infos = [parse_header(d).exchange for d in sent]
    assert infos.count(ExchangeType.INFORMATIONAL) == 1
    assert a.state == b.state == State.ESTABLISHED
