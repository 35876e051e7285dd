"""SPI index and compiled SPD against plain Python models (hypothesis)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.shm_helpers import shm_sa

from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy
from fastpath.shm import Capacities, ffi, lib


@pytest.fixture
def region(shm_path):
    r = ControlRegion.create(shm_path, Capacities(n_sa=64, n_spd=64, cmd_ring=1024, evt_ring=16))
    yield r
    r.close()


def _examples(n: int) -> settings:
    """hypothesis settings for a test on the ``region`` fixture: the test empties the region itself, so one
    region serves every example."""
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


DSTS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
KEY = bytes(20)


def _ends(dst: str) -> dict[str, str]:
    """An SA's addresses for destination ``dst``: a source of the same family that no test looks up."""
    return {"src": "192.0.2.100" if ipaddress.ip_address(dst).version == 4 else "2001:db8::100", "dst": dst}


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(256, 262), st.sampled_from(DSTS)),
    st.tuples(st.just("del"), st.integers(0, 63)),
    st.tuples(st.just("upd"), st.integers(0, 63), st.integers(256, 262)),
), max_size=120)


@_examples(60)
@given(ops)
def test_spi_index_matches_a_dict(region, ops):
    for slot in list(region.installed()):
        region.delete_sa(slot)
    model: dict[int, tuple[int, str]] = {}   # slot -> (spi, dst)
    for op in ops:
        if op[0] == "add":
            if len(model) < 64:
                model[region.install_sa(shm_sa(op[1], enc_key=KEY, **_ends(op[2])), "in").slot] = (op[1], op[2])
        elif op[0] == "del":
            if model:
                slot = sorted(model)[op[1] % len(model)]
                region.delete_sa(slot)
                del model[slot]
        elif model:
            slot = sorted(model)[op[1] % len(model)]
            region.update_sa(slot, shm_sa(op[2], enc_key=KEY, **_ends(model[slot][1])), "in")
            model[slot] = (op[2], model[slot][1])
        _check_spi_batch(region, model)
        for spi in range(256, 263):
            holders = {s for s, (m_spi, _) in model.items() if m_spi == spi}
            got = region.lookup_spi(spi)
            assert (got is None) == (not holders) and (got is None or got in holders)
            for dst in DSTS:
                want = {s for s, v in model.items() if v == (spi, dst)}
                got = region.lookup_spi(spi, dst)
                assert (got is None) == (not want) and (got is None or got in want)


def _check_spi_batch(region, model: dict[int, tuple[int, str]]) -> None:
    """The batch lookup against the model and the single lookup, on every key (in a shuffled
    order, repeated past one chunk), by SPI alone and by (SPI, destination)."""
    keys = [(spi, dst) for spi in range(255, 264) for dst in DSTS + ["192.0.2.3"]] * 3
    rng = np.random.default_rng(len(model))
    keys = [keys[i] for i in rng.permutation(len(keys))]
    spi = np.array([k[0] for k in keys], np.uint32)
    fam = np.array([ipaddress.ip_address(k[1]).version for k in keys], np.uint8)
    dst = np.zeros((len(keys), 16), np.uint8)
    for i, (_, d) in enumerate(keys):
        b = ipaddress.ip_address(d).packed
        dst[i, :len(b)] = list(b)
    by_spi = region.lookup_spis(spi)
    by_dst = region.lookup_spis(spi, fam, dst)
    for i, (k_spi, k_dst) in enumerate(keys):
        holders = {s for s, (m_spi, _) in model.items() if m_spi == k_spi}
        want = {s for s, v in model.items() if v == (k_spi, k_dst)}
        assert (by_spi[i] < 0) == (not holders) and (by_spi[i] < 0 or by_spi[i] in holders)
        assert (by_dst[i] < 0) == (not want) and (by_dst[i] < 0 or by_dst[i] in want)
        # Same answer as the single lookup, which picks the first SA on the probe chain.
        assert by_spi[i] == (region.lookup_spi(k_spi) if holders else -1)
        assert by_dst[i] == (region.lookup_spi(k_spi, k_dst) if want else -1)


def test_spi_batch_lookup_at_scale(shm_path):
    """Many SAs, several sharing each SPI across destinations, and absent keys: the batch path
    agrees with the single lookup key for key (chunks, the destination fallback, misses)."""
    n = 3000
    r = ControlRegion.create(shm_path, Capacities(n_sa=n, n_spd=16, cmd_ring=1 << 13, evt_ring=16))
    try:
        for i in range(n):
            r.install_sa(shm_sa(0x1000 + i // 3, enc_key=KEY, **_ends(f"192.0.2.{i % 3 + 1}")), "in", validate=False)
        rng = np.random.default_rng(7)
        k = 5000
        spi = (0x1000 + rng.integers(-50, n // 3 + 50, k)).astype(np.uint32)
        fam = np.full(k, 4, np.uint8)
        dst = np.zeros((k, 16), np.uint8)
        dst[:, :3] = (192, 0, 2)
        dst[:, 3] = rng.integers(1, 5, k)
        got = r.lookup_spis(spi, fam, dst)
        want = [r.lookup_spi(int(s), f"192.0.2.{d}") for s, d in zip(spi, dst[:, 3], strict=True)]
        assert got.tolist() == [-1 if w is None else w for w in want]
        assert (got >= 0).sum() > k // 2 and (got < 0).sum() > k // 10
        got = r.lookup_spis(spi)
        assert got.tolist() == [-1 if w is None else w for w in map(r.lookup_spi, spi.tolist())]
        assert r.lookup_spis(np.empty(0, np.uint32)).shape == (0,)
    finally:
        r.close()


def test_spi_index_survives_many_deletes(region):
    """Tombstones are compacted: churn far beyond the table size keeps lookups right."""
    live = {}
    gens = region.hdr.hash_gen
    for i in range(5000):
        h = region.install_sa(shm_sa(1000 + i, enc_key=KEY, **_ends("192.0.2.1")), "in", validate=False)
        live[h.slot] = 1000 + i
        if len(live) > 40:
            slot = min(live, key=live.get)
            region.delete_sa(slot)
            del live[slot]
    assert region.hdr.hash_gen - gens > 100          # compaction ran, many times
    assert region.hdr.hash_tomb <= region.hdr.n_hash // 8
    assert region.hdr.hash_live == len(live)
    for slot, spi in live.items():
        assert region.lookup_spi(spi) == slot
    # Deleted SPIs are gone, including the one deleted by the operation that compacted.
    live_spis = set(live.values())
    assert all(region.lookup_spi(spi) is None for spi in range(999, 6001) if spi not in live_spis)


# -- SPD -------------------------------------------------------------------------------------

# A small address space so random prefixes overlap and random packets hit them.
def v4_prefix():
    return st.tuples(st.integers(0, 255), st.sampled_from([0, 8, 16, 20, 24, 25, 28, 30, 32])).map(
        lambda t: str(ipaddress.ip_network((int(ipaddress.ip_address("10.1.0.0")) + t[0], t[1]), strict=False)))


def v6_prefix():
    return st.tuples(st.integers(0, 255), st.sampled_from([0, 64, 112, 120, 124, 128])).map(
        lambda t: str(ipaddress.ip_network((int(ipaddress.ip_address("2001:db8::")) + t[0], t[1]), strict=False)))


def port_range():
    return st.one_of(st.just((0, 65535)), st.tuples(st.integers(0, 20), st.integers(0, 20)).map(
        lambda t: (min(t), max(t))))


@st.composite
def policies(draw):
    v6 = draw(st.booleans())
    pref = v6_prefix() if v6 else v4_prefix()
    return Policy(src=draw(pref), dst=draw(pref), proto=draw(st.sampled_from([0, 6, 17])), sport=draw(port_range()),
                  dport=draw(port_range()), action=draw(st.sampled_from([PROTECT, BYPASS, DISCARD])),
                  priority=draw(st.integers(0, 5)))


@st.composite
def packets(draw):
    v6 = draw(st.booleans())
    base = "2001:db8::" if v6 else "10.1.0.0"
    addr = st.integers(0, 255).map(lambda i: str(ipaddress.ip_address(base) + i))
    return (draw(addr), draw(addr), draw(st.sampled_from([1, 6, 17])), draw(st.integers(0, 20)),
            draw(st.integers(0, 20)))


def _model_lookup(pols: dict[int, Policy], pkt) -> int | None:
    src, dst, proto, sport, dport = pkt
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    best = None
    for idx, p in pols.items():
        ps, pd = ipaddress.ip_network(p.src), ipaddress.ip_network(p.dst)
        if ps.version != s.version or s not in ps or d not in pd:
            continue
        if p.proto and p.proto != proto:
            continue
        if not (p.sport[0] <= sport <= p.sport[1] and p.dport[0] <= dport <= p.dport[1]):
            continue
        if best is None or (p.priority, idx) < (pols[best].priority, best):
            best = idx
    return best


@_examples(80)
@given(st.lists(policies(), max_size=40), st.lists(packets(), min_size=1, max_size=40), st.data())
def test_spd_lookup_matches_a_linear_scan(region, pols, pkts, data):
    model = _load(region, pols)
    # Delete a few and recompile: the other copy must be built from scratch, not patched.
    for idx in data.draw(st.lists(st.sampled_from(sorted(model)), max_size=5, unique=True)) if model else []:
        region.delete_policy(idx, commit=False)
        del model[idx]
    region.commit_policies()
    _check(region, model, pkts)


def _lookup_many(region, pkts) -> list[int | None]:
    """The batch path (grouped trie walk) for the same packets."""
    n = len(pkts)
    fam = np.zeros(n, np.uint8)
    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    proto = np.zeros(n, np.uint8)
    sport = np.zeros(n, np.uint16)
    dport = np.zeros(n, np.uint16)
    for i, (s, d, pr, sp, dp) in enumerate(pkts):
        a, b = ipaddress.ip_address(s), ipaddress.ip_address(d)
        fam[i] = a.version
        src[i, :len(a.packed)] = list(a.packed)
        dst[i, :len(b.packed)] = list(b.packed)
        proto[i], sport[i], dport[i] = pr, sp, dp
    out = np.empty(n, np.int32)
    lib.ipsg_spd_lookup_many(region.handle, n, ffi.from_buffer("uint8_t[]", fam), ffi.from_buffer("uint8_t[]", src),
                             ffi.from_buffer("uint8_t[]", dst), ffi.from_buffer("uint8_t[]", proto),
                             ffi.from_buffer("uint16_t[]", sport), ffi.from_buffer("uint16_t[]", dport),
                             ffi.from_buffer("int32_t[]", out))
    return [None if x < 0 else int(x) for x in out]


def _check(region, model: dict[int, Policy], pkts) -> None:
    wants = [_model_lookup(model, pkt) for pkt in pkts]
    for pkt, want in zip(pkts, wants, strict=True):
        got = region.lookup_policy(*pkt)
        assert (got.policy if got else None) == want, (pkt, want and model[want], got)
        if got:
            assert got.action == model[want].action
    # Batches longer than one lookup group, so groups and their tails both run.
    reps = 1 + 70 // len(pkts)
    assert _lookup_many(region, pkts * reps) == wants * reps


def _compiled(region):
    base = lib.ipsg_shm_base(region.handle) + region.hdr.off_spd[region.hdr.spd_gen & 1]
    return ffi.cast("struct ipsg_spd_compiled *", base)


def _reset(region) -> None:
    for i in range(region.caps.n_spd):
        try:
            region.delete_policy(i, commit=False)
        except KeyError:
            pass


def _load(region, pols: list[Policy]) -> dict[int, Policy]:
    """The region's SPD emptied, then pols added in order and compiled once; index -> policy, the model
    ``_check`` scans."""
    _reset(region)
    model = {region.add_policy(p, commit=False): p for p in pols}
    region.commit_policies()
    return model


# Every prefix length, on addresses that straddle /16 and nibble boundaries, so the trie's
# root entries, chunk levels and leaf pushing all meet overlapping prefixes.
_V4_BASE = int(ipaddress.ip_address("10.1.255.0"))
_V6_BASE = int(ipaddress.ip_address("2001:db8::ff00"))


def any_prefix(v6: bool):
    base, bits = (_V6_BASE, 128) if v6 else (_V4_BASE, 32)
    return st.tuples(st.integers(0, 511), st.integers(0, bits)).map(
        lambda t: str(ipaddress.ip_network((base + t[0], t[1]), strict=False)))


@st.composite
def policies_any_length(draw):
    v6 = draw(st.integers(0, 3)) == 0
    constrained = draw(st.booleans())
    src = draw(any_prefix(v6)) if constrained and draw(st.booleans()) else ("::/0" if v6 else "0.0.0.0/0")
    return Policy(src=src, dst=draw(any_prefix(v6)), proto=draw(st.sampled_from([0, 0, 6, 17])) if constrained else 0,
                  sport=draw(port_range()) if constrained else (0, 65535),
                  dport=draw(st.one_of(port_range(), st.just((20, 20)), st.just((0, 0)), st.just((65535, 65535))))
                  if constrained else (0, 65535),
                  action=draw(st.sampled_from([PROTECT, BYPASS, DISCARD])), priority=draw(st.integers(0, 3)))


@st.composite
def packets_any(draw):
    v6 = draw(st.integers(0, 3)) == 0
    base = _V6_BASE if v6 else _V4_BASE
    addr = st.integers(0, 511).map(lambda i: str(ipaddress.ip_address(base + i)))
    far = st.just("2001:db9::1" if v6 else "11.0.0.1")   # outside every prefix but /0 and other short ones
    port = st.one_of(st.integers(0, 21), st.just(65535))
    return (draw(addr), draw(st.one_of(addr, far)), draw(st.sampled_from([1, 6, 17])), draw(port), draw(port))


@_examples(120)
@given(st.lists(policies_any_length(), max_size=60), st.lists(packets_any(), min_size=1, max_size=40))
def test_trie_matches_a_linear_scan_at_every_prefix_length(region, pols, pkts):
    """/0 to /32 (/128), nested and overlapping, ports at range edges, priority ties (broken by index)."""
    _check(region, _load(region, pols), pkts)


# IPv6 on its own: prefixes of every length /0-/128 around byte and 64-bit boundaries (the
# two address words, the probe order of the lengths), nested and overlapping.
_V6_MID = int(ipaddress.ip_address("2001:db8:0:1:ffff:ffff:ffff:ff00"))


def v6_any_prefix():
    return st.tuples(st.integers(0, 767), st.integers(0, 128)).map(
        lambda t: str(ipaddress.ip_network((_V6_MID + t[0], t[1]), strict=False)))


@st.composite
def v6_policies(draw):
    constrained = draw(st.booleans())
    return Policy(src=draw(v6_any_prefix()) if constrained and draw(st.booleans()) else "::/0",
                  dst=draw(v6_any_prefix()), proto=draw(st.sampled_from([0, 0, 6, 17])) if constrained else 0,
                  sport=draw(port_range()) if constrained else (0, 65535),
                  dport=draw(st.one_of(port_range(), st.just((0, 0)), st.just((65535, 65535)))) if constrained
                  else (0, 65535),
                  action=draw(st.sampled_from([PROTECT, BYPASS, DISCARD])), priority=draw(st.integers(0, 3)))


@st.composite
def v6_packets(draw):
    addr = st.integers(0, 767).map(lambda i: str(ipaddress.ip_address(_V6_MID + i)))
    far = st.sampled_from(["2001:db9::1", "::1", "ffff::1"])
    port = st.one_of(st.integers(0, 21), st.just(65535))
    return (draw(addr), draw(st.one_of(addr, addr, far)), draw(st.sampled_from([1, 6, 17])), draw(port), draw(port))


@_examples(120)
@given(st.lists(v6_policies(), max_size=60), st.lists(v6_packets(), min_size=1, max_size=40))
def test_v6_lists_match_a_linear_scan_at_every_prefix_length(region, pols, pkts):
    """IPv6 through the longest-prefix bucket and its candidate list (single and batch paths)."""
    model = _load(region, pols)
    c = _compiled(region)
    assert c.v6_prefixes == len({ipaddress.ip_network(p.dst) for p in pols})
    assert c.v6_nlens == len({ipaddress.ip_network(p.dst).prefixlen for p in pols})
    assert list(c.v6_lens)[:c.v6_nlens] == sorted({ipaddress.ip_network(p.dst).prefixlen for p in pols},
                                                  reverse=True)
    _check(region, model, pkts)


def test_v6_long_candidate_lists_are_cut_and_fall_back(region):
    """64 nested IPv6 prefixes whose rules all restrict the source need longer lists than
    allowed: some are cut (v6_cut > 0), and the lookups that reach a cut list still match the
    linear scan."""
    model = _load(region, [Policy(src=f"2001:db8:99:{plen:x}::/64",
                                  dst=str(ipaddress.ip_network(f"2001:db8::1:2:3/{plen}", strict=False)),
                                  priority=(plen * 7) % 11, action=plen % 3) for plen in range(0, 128, 2)])
    c = _compiled(region)
    assert c.v6_prefixes == 64 and c.v6_cut > 0 and c.v6_cands <= 4 * region.caps.n_spd + 16
    pkts = [(f"2001:db8:99:{s:x}::5", "2001:db8::1:2:3", 6, 1, 2) for s in range(0, 130, 3)]
    pkts += [(f"2001:db8:99:{s:x}::5", "2001:db8::1:2:4", 17, 1, 2) for s in range(0, 130, 5)]
    pkts += [("2001:db8:99:80::1", "2001:db8:ff::1", 6, 1, 2)]
    _check(region, model, pkts)


def test_v6_unconstrained_rule_ends_the_list(region):
    model = _load(region, [Policy(src="::/0", dst="2001:db8::/32", priority=5, action=BYPASS),
                           Policy(src="::/0", dst="2001:db8:1::/48", priority=1, proto=6, action=DISCARD),
                           Policy(src="::/0", dst="2001:db8:1:2::/64", priority=9, action=PROTECT),
                           Policy(src="::/0", dst="2001:db8:1:2::/64", priority=5, dport=(53, 53)),
                           Policy(src="::/0", dst="2001:db8:1:2::/64", priority=5, action=DISCARD),
                           Policy(src="::/0", dst="2001:db8:1:2::7/128", priority=7, sport=(1, 1))])
    c = _compiled(region)
    assert c.v6_cut == 0 and c.v6_prefixes == 4 and list(c.v6_lens)[:4] == [128, 64, 48, 32]
    _check(region, model, [("2001:db8::9", d, p, sp, dp)
                           for d in ("2001:db8:1:2::7", "2001:db8:1:2::9", "2001:db8:1:3::9", "2001:db8:2::1",
                                     "2001:db9::1")
                           for p in (6, 17) for sp in (1, 2) for dp in (53, 54)])


def test_long_candidate_lists_are_cut_and_fall_back(region):
    """33 nested prefixes (/0 .. /32) whose rules all restrict the source: their merged lists are
    longer than a list may be, and the 64-policy region's candidate budget runs out, so lookups
    take the fallback search; the answers still match the linear scan."""
    nested = [Policy(src=f"192.168.{plen}.0/24", dst=str(ipaddress.ip_network(f"10.1.2.3/{plen}", strict=False)),
                     priority=(plen * 7) % 11, action=plen % 3) for plen in range(33)]
    # more prefixes competing for the candidate budget
    more = [Policy(src="192.168.99.0/24", dst=f"10.9.{i}.1/32", priority=i) for i in range(31)]
    model = _load(region, nested + more)
    c = _compiled(region)
    assert c.v4_prefixes == 64 and c.v4_cut > 0
    assert c.v4_cands <= 4 * region.caps.n_spd + 16
    pkts = [(f"192.168.{s}.5", "10.1.2.3", 6, 1, 2) for s in range(0, 40)]
    pkts += [(f"192.168.{s}.5", "10.1.2.200", 17, 1, 2) for s in range(0, 40, 3)]
    pkts += [("192.168.99.1", f"10.9.{i}.1", 6, 1, 2) for i in range(31)]
    _check(region, model, pkts)


def test_unconstrained_rule_ends_the_list(region):
    """A rule with no source, protocol or port constraint hides every worse rule behind it."""
    model = _load(region, [Policy(dst="10.0.0.0/8", priority=5, action=BYPASS),
                           Policy(dst="10.1.0.0/16", priority=1, proto=6, action=DISCARD),
                           Policy(dst="10.1.2.0/24", priority=9, action=PROTECT),
                           Policy(dst="10.1.2.0/24", priority=5, dport=(53, 53)),
                           Policy(dst="10.1.2.0/24", priority=5, action=DISCARD)])   # tie with the /8: index decides
    assert _compiled(region).v4_cut == 0
    _check(region, model, [("1.1.1.1", d, p, 1, dp) for d in ("10.1.2.9", "10.1.3.9", "10.2.0.1", "11.0.0.1")
                           for p in (6, 17) for dp in (53, 54)])


def test_spd_binding_changes_without_recompiling(region):
    h = region.install_sa(shm_sa(0x500, enc_key=KEY, **_ends("192.0.2.1")), "out")
    idx = region.add_policy(Policy("10.0.0.0/8", "10.2.0.0/16", action=PROTECT))
    assert region.lookup_policy("10.1.1.1", "10.2.3.4").sas == ()
    gen = region.hdr.spd_gen
    region.bind_policy(idx, (h.slot,))
    assert region.lookup_policy("10.1.1.1", "10.2.3.4").sas == (h.slot,)
    assert region.hdr.spd_gen == gen
    assert region.lookup_policy("10.1.1.1", "10.3.3.4") is None


def test_policy_read_back(region):
    p = Policy("2001:db8::/32", "2001:db8:1::/48", 17, (500, 500), (4500, 4500), DISCARD, 7, policy_id=99)
    idx = region.add_policy(p)
    assert region.policy(idx) == p
    with pytest.raises(ValueError, match="same IP version"):
        region.add_policy(Policy("10.0.0.0/8", "2001:db8::/32"))
