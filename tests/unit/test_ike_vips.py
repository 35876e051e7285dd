"""Virtual IPs in IKE_AUTH (RFC 7296 §2.19, §3.15) between two of our IKE SAs: the initiator asks with a
CFG_REQUEST, the responder leases from a real pool (control/pools.py), both narrow to the lease."""

from __future__ import annotations

import ipaddress

from support.ike_pair import PSK, Pair, child

from control.ike.config import Identity, IkeConfig
from control.ike.constants import Notify
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaRekeyed, State
from control.ike.message import TrafficSelectorEntry as TS
from control.pools import Pool, Pools

ip = ipaddress.ip_address


def _configs(pools: Pools, who: str = "alice@example.org", vips=(4,), dynamic=True) -> tuple[IkeConfig, IkeConfig]:
    ci = IkeConfig(Identity.from_string(who), PSK, Identity.from_string("gw.example"),
                   children=[child(local="0.0.0.0/0", remote="10.2.0.0/16")], vips=vips)
    rw = child(local="10.2.0.0/16", remote="0.0.0.0/0")
    rw.remote_dynamic = dynamic
    cr = IkeConfig(Identity.from_string("gw.example"), PSK, None, children=[rw], pools=("rw",),
                   addresses=pools)
    return ci, cr


def _est(p: Pair, side: str) -> IkeSaEstablished:
    (e,) = p.of(side, IkeSaEstablished)
    return e


def test_client_gets_a_lease_and_the_child_narrows_to_it():
    pools = Pools([Pool("rw", "10.99.0.0/24", [ip("10.2.0.53")])])
    p = Pair(*_configs(pools)).run()
    assert _est(p, "a").vips == _est(p, "b").vips == (ip("10.99.0.1"),)
    assert p.i.dns == [ip("10.2.0.53")]
    (ca,) = p.of("a", ChildSaEstablished)
    (cb,) = p.of("b", ChildSaEstablished)
    lease = [TS(ip("10.99.0.1"), ip("10.99.0.1"))]
    assert ca.local_ts == lease and cb.remote_ts == lease
    assert cb.local_ts == [TS.from_network("10.2.0.0/16")]
    (pool,) = pools.as_list()
    assert pool["used"] == 1
    assert pool["leases"] == [{"address": "10.99.0.1", "identity": "alice@example.org", "online": True}]


def test_without_dynamic_the_selectors_are_the_configured_ones():
    pools = Pools([Pool("rw", "10.99.0.0/24")])
    p = Pair(*_configs(pools, dynamic=False)).run()
    assert _est(p, "a").vips == (ip("10.99.0.1"),)
    (cb,) = p.of("b", ChildSaEstablished)
    assert cb.remote_ts == [TS.from_network("0.0.0.0/0")]


def test_two_clients_distinct_and_an_exhausted_pool_refuses_the_third():
    pools = Pools([Pool("rw", "10.99.0.1-10.99.0.2")])
    got = []
    for who in ("alice@example.org", "bob@example.org"):
        p = Pair(*_configs(pools, who)).run()
        got.append(_est(p, "a").vips)
    assert got[0] != got[1] and {a for (a,) in got} == {ip("10.99.0.1"), ip("10.99.0.2")}
    p = Pair(*_configs(pools, "carol@example.org")).run()
    # the IKE SA is up, without an address and without a CHILD SA (§3.15.4)
    assert p.i.state == State.ESTABLISHED and _est(p, "a").vips == ()
    assert not p.of("a", ChildSaEstablished) and not p.of("b", ChildSaEstablished)
    assert [f.notify for f in p.of("a", ChildSaFailed)] == [Notify.INTERNAL_ADDRESS_FAILURE]
    assert [f.notify for f in p.of("b", ChildSaFailed)] == [Notify.INTERNAL_ADDRESS_FAILURE]
    assert p.r.stats["cp_address_failure"] == 1
    (pool,) = pools.as_list()
    assert pool["used"] == 2 and "carol@example.org" not in {x["identity"] for x in pool["leases"]}


def test_reconnect_gets_the_same_address():
    pools = Pools([Pool("rw", "10.99.0.0/29")])
    first = Pair(*_configs(pools, "alice@example.org")).run()
    Pair(*_configs(pools, "bob@example.org")).run()
    pools.release(first.r.our_spi)      # the daemon does this when alice's IKE SA is gone
    again = Pair(*_configs(pools, "alice@example.org")).run()
    assert _est(again, "a").vips == _est(first, "a").vips == (ip("10.99.0.1"),)


def test_no_pool_no_address_but_the_child_comes_up():
    # a responder with no pools ignores the CFG_REQUEST (§3.15.4 lets it); the initiator gets no address
    ci, cr = _configs(Pools())
    cr.pools, cr.addresses = (), None
    cr.children[0].remote_dynamic = False
    p = Pair(ci, cr).run()
    assert _est(p, "a").vips == () and p.of("a", ChildSaEstablished)


def test_ipv6_lease():
    pools = Pools([Pool("rw", "fd00:99::/120", [ip("fd00::53")])])
    ci, cr = _configs(pools, vips=(6,))
    ci.children = [child(local="::/0", remote="fd00:2::/48")]
    cr.children = [child(local="fd00:2::/48", remote="::/0")]
    cr.children[0].remote_dynamic = True
    p = Pair(ci, cr).run()
    assert _est(p, "a").vips == (ip("fd00:99::1"),)
    (ca,) = p.of("a", ChildSaEstablished)
    assert ca.local_ts == [TS(ip("fd00:99::1"), ip("fd00:99::1"))]


def test_ike_rekey_keeps_the_addresses():
    pools = Pools([Pool("rw", "10.99.0.0/24")])
    p = Pair(*_configs(pools)).run()
    p.i.rekey_ike(p.now)
    p.run()
    (ev,) = p.of("a", IkeSaRekeyed)
    assert ev.new_sa.vips == [ip("10.99.0.1")]
    assert p.ike("b").vips == [ip("10.99.0.1")]


def test_later_children_and_rekeys_stay_on_the_lease():
    # CREATE_CHILD_SA after IKE_AUTH: a client proposing 0.0.0.0/0 again still gets only its address
    pools = Pools([Pool("rw", "10.99.0.0/24")])
    p = Pair(*_configs(pools)).run()
    (first,) = p.of("a", ChildSaEstablished)
    p.clear()
    p.i.rekey_child(p.now, first.inbound.spi)
    p.i.create_child(p.now, child("net", local="0.0.0.0/0", remote="10.2.0.0/16"))
    p.run()
    got = p.of("b", ChildSaEstablished)
    assert len(got) == 2
    lease = [TS(ip("10.99.0.1"), ip("10.99.0.1"))]
    assert all(c.remote_ts == lease for c in got), [c.remote_ts for c in got]
    assert any(c.rekey_of is not None for c in got)
