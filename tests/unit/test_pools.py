"""Address pools (control/pools.py): ranges, uniqueness, exhaustion, release, re-offer, adoption."""

from __future__ import annotations

import ipaddress

import pytest

from control.pools import Pool, PoolError, Pools, parse_range, pools_text

ip = ipaddress.ip_address


@pytest.mark.parametrize("text,first,last", [
    ("10.99.0.0/24", "10.99.0.1", "10.99.0.254"),
    ("10.99.0.10-10.99.0.12", "10.99.0.10", "10.99.0.12"),
    ("10.99.0.5/32", "10.99.0.5", "10.99.0.5"),
    ("fd00:99::/120", "fd00:99::1", "fd00:99::ff"),
    ("fd00::10 - fd00::1f", "fd00::10", "fd00::1f"),
])
def test_ranges(text, first, last):
    assert parse_range(text) == (ip(first), ip(last))


@pytest.mark.parametrize("text", ["10.99.0.9-10.99.0.1", "10.0.0.1-fd00::1", "10.99.0/24", "pool", "10.0.0.300"])
def test_bad_ranges(text):
    with pytest.raises(PoolError):
        parse_range(text)


def test_unique_then_exhausted_then_released():
    pools = Pools([Pool("two", "10.99.0.1-10.99.0.2")])
    a = pools.acquire(("two",), "alice", 4, b"A" * 8)
    b = pools.acquire(("two",), "bob", 4, b"B" * 8)
    assert a is not None and b is not None and a.address != b.address
    assert pools.acquire(("two",), "carol", 4, b"C" * 8) is None
    assert pools.pools["two"].used == 2 and pools.pools["two"].refused == 1
    assert pools.release(b"B" * 8) == [b.address]
    assert pools.pools["two"].used == 1
    # bob's address is offline: carol may take it over, as no address was never used
    c = pools.acquire(("two",), "carol", 4, b"C" * 8)
    assert c is not None and c.address == b.address
    leases = {x["identity"]: x for x in pools.as_list()[0]["leases"]}
    assert set(leases) == {"alice", "carol"}


def test_same_identity_gets_its_address_back():
    pools = Pools([Pool("p", "10.99.0.0/29")])
    first = pools.acquire(("p",), "alice", 4, b"1" * 8)
    pools.acquire(("p",), "bob", 4, b"2" * 8)
    pools.release(b"1" * 8)
    pools.acquire(("p",), "carol", 4, b"3" * 8)        # an unused address exists: alice's is kept
    again = pools.acquire(("p",), "alice", 4, b"4" * 8)
    assert first is not None and again is not None and again.address == first.address
    assert pools.pools["p"].used == 3


def test_two_ike_sas_of_one_identity_share_the_lease():
    pools = Pools([Pool("p", "10.99.0.0/29")])
    a = pools.acquire(("p",), "alice", 4, b"old-spi!")
    b = pools.acquire(("p",), "alice", 4, b"new-spi!")       # reauthentication: make before break
    assert a == b
    assert pools.release(b"old-spi!") == []                  # still held by the new IKE SA
    assert pools.as_list()[0]["leases"][0]["online"] is True


def test_rekey_moves_the_lease():
    pools = Pools([Pool("p", "10.99.0.0/29")])
    pools.acquire(("p",), "alice", 4, b"old-spi!")
    pools.transfer(b"old-spi!", b"new-spi!")
    assert pools.release(b"old-spi!") == []
    assert pools.release(b"new-spi!") == [ip("10.99.0.1")]


def test_version_and_order_of_pools():
    pools = Pools([Pool("v6", "fd00:99::/126", [ip("fd00::53")]), Pool("small", "10.99.1.1-10.99.1.1"),
                   Pool("big", "10.99.2.0/24", [ip("10.0.0.53")])])
    six = pools.acquire(("v6", "small", "big"), "alice", 6, b"a" * 8)
    assert six is not None and six.address == ip("fd00:99::1") and six.dns == (ip("fd00::53"),)
    four = pools.acquire(("v6", "small", "big"), "alice", 4, b"a" * 8)
    assert four is not None and four.pool == "small"
    spill = pools.acquire(("v6", "small", "big"), "bob", 4, b"b" * 8)
    assert spill is not None and spill.pool == "big" and spill.dns == (ip("10.0.0.53"),)
    assert pools.acquire(("nosuch",), "bob", 4, b"b" * 8) is None


def test_adopt_restored_lease():
    pools = Pools([Pool("p", "10.99.0.1-10.99.0.3")])
    assert pools.adopt(ip("10.99.0.2"), "alice", b"a" * 8, ("p",))
    assert not pools.adopt(ip("10.99.0.2"), "bob", b"b" * 8, ("p",))       # not bob's
    assert not pools.adopt(ip("10.98.0.2"), "bob", b"b" * 8, ("p",))       # not in the pool
    got = pools.acquire(("p",), "bob", 4, b"b" * 8)
    assert got is not None and got.address == ip("10.99.0.3")


def test_reconfigure_keeps_unchanged_pools():
    pools = Pools([Pool("p", "10.99.0.0/29"), Pool("q", "10.98.0.0/29")])
    pools.acquire(("p",), "alice", 4, b"a" * 8)
    pools.acquire(("q",), "alice", 4, b"a" * 8)
    pools.reconfigure([Pool("p", "10.99.0.0/29"), Pool("q", "10.97.0.0/29")])
    by = {p["name"]: p for p in pools.as_list()}
    assert by["p"]["used"] == 1 and by["q"]["used"] == 0


def test_text():
    pools = Pools([Pool("p", "10.99.0.0/30", [ip("10.0.0.53")])])
    pools.acquire(("p",), "alice@example.org", 4, b"a" * 8)
    text = pools_text(pools.as_list())
    assert "p: 10.99.0.0/30  size 2  used 1  dns 10.0.0.53" in text
    assert "10.99.0.1" in text and "alice@example.org" in text and "online" in text
    assert pools_text([]) == "no pools configured"
