"""SPI index and compiled SPD against plain Python models (hypothesis)."""

from __future__ import annotations

import ipaddress
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy
from fastpath.sa import SA
from fastpath.shm import Capacities


def _path() -> Path:
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    return base / f"ipsecgw-test-{uuid.uuid4().hex}.shm"


@pytest.fixture
def region():
    path = _path()
    r = ControlRegion.create(path, Capacities(n_sa=64, n_spd=64, cmd_ring=1024, evt_ring=16))
    yield r
    r.close()
    path.unlink(missing_ok=True)


DSTS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]


def _sa(spi: int, dst: str) -> SA:
    d = ipaddress.ip_address(dst)
    src = ipaddress.ip_address("192.0.2.100" if d.version == 4 else "2001:db8::100")
    return SA(spi=spi, src=src, dst=d, enc="aes-gcm-128", enc_key=bytes(20))


ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(256, 262), st.sampled_from(DSTS)),
    st.tuples(st.just("del"), st.integers(0, 63)),
    st.tuples(st.just("upd"), st.integers(0, 63), st.integers(256, 262)),
), max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_spi_index_matches_a_dict(region, ops):
    for slot in list(region.installed()):
        region.delete_sa(slot)
    model: dict[int, tuple[int, str]] = {}   # slot -> (spi, dst)
    for op in ops:
        if op[0] == "add":
            if len(model) < 64:
                model[region.install_sa(_sa(op[1], op[2]), "in").slot] = (op[1], op[2])
        elif op[0] == "del":
            if model:
                slot = sorted(model)[op[1] % len(model)]
                region.delete_sa(slot)
                del model[slot]
        elif model:
            slot = sorted(model)[op[1] % len(model)]
            region.update_sa(slot, _sa(op[2], model[slot][1]), "in")
            model[slot] = (op[2], model[slot][1])
        for spi in range(256, 263):
            holders = {s for s, (m_spi, _) in model.items() if m_spi == spi}
            got = region.lookup_spi(spi)
            assert (got is None) == (not holders) and (got is None or got in holders)
            for dst in DSTS:
                want = {s for s, v in model.items() if v == (spi, dst)}
                got = region.lookup_spi(spi, dst)
                assert (got is None) == (not want) and (got is None or got in want)


def test_spi_index_survives_many_deletes(region):
    """Tombstones are compacted: churn far beyond the table size keeps lookups right."""
    live = {}
    gens = region.hdr.hash_gen
    for i in range(5000):
        h = region.install_sa(_sa(1000 + i, "192.0.2.1"), "in", validate=False)
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(policies(), max_size=40), st.lists(packets(), min_size=1, max_size=40), st.data())
def test_spd_lookup_matches_a_linear_scan(region, pols, pkts, data):
    for i in list(range(region.caps.n_spd)):
        try:
            region.delete_policy(i, commit=False)
        except KeyError:
            pass
    model = {}
    for p in pols:
        model[region.add_policy(p, commit=False)] = p
    region.commit_policies()
    # Delete a few and recompile: the other copy must be built from scratch, not patched.
    for idx in data.draw(st.lists(st.sampled_from(sorted(model)), max_size=5, unique=True)) if model else []:
        region.delete_policy(idx, commit=False)
        del model[idx]
    region.commit_policies()
    for pkt in pkts:
        want = _model_lookup(model, pkt)
        got = region.lookup_policy(*pkt)
        assert (got.policy if got else None) == want, (pkt, want and model[want], got)
        if got:
            assert got.action == model[want].action


def test_spd_binding_changes_without_recompiling(region):
    h = region.install_sa(_sa(0x500, "192.0.2.1"), "out")
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
