"""Command ring, event ring, counters, expiry events, alarms and ACQUIRE rate limiting."""

from __future__ import annotations

import pytest
from support.shm_helpers import shm_sa

from cdefs.sa import Lifetime
from control.shm import PROTECT, ControlRegion, Policy
from fastpath import engines
from fastpath.batch import Batch
from fastpath.engines.base import SAStats
from fastpath.shm import Capacities, FastpathRegion, ffi, lib, stats_to_c
from fastpath.status import SAFlag, Status

KEY = bytes(range(20))


@pytest.fixture
def pair(shm_path):
    path = shm_path
    c = ControlRegion.create(path, Capacities(n_sa=64, n_spd=16, cmd_ring=16, evt_ring=16))
    f = FastpathRegion.attach(path)
    yield c, f
    f.close()
    c.close()


def _ipv4(payload: bytes = b"x" * 40) -> bytes:
    from scapy.layers.inet import IP, UDP

    return bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=1, dport=2) / payload)


def test_command_ring_overflow_makes_the_fastpath_rescan(pair):
    c, f = pair
    eng = engines.create("best", capacity=64)
    handles = [c.install_sa(shm_sa(0x3000 + i, enc_key=KEY), "in") for i in range(40)]   # ring holds 16
    assert c.hdr.resync_gen > 0
    res = f.sync(eng)
    assert sorted(res.installed) == sorted(h.slot for h in handles)
    assert f.sync(eng).installed == []       # nothing left over
    c.delete_sa(handles[3].slot)
    assert f.sync(eng).removed == [handles[3].slot]


def test_expiry_events_flow_to_control(pair):
    c, f = pair
    eng = engines.create("best", capacity=64)
    h = c.install_sa(shm_sa(0x2000, enc_key=KEY, lifetime=Lifetime(soft_packets=3, hard_packets=5)), "out")
    f.sync(eng)
    b = Batch(capacity=8)
    b.extend([_ipv4()] * 8, sa=h.slot)
    f.reserve_batch(b.sa, b.n)
    eng.outbound(b)
    assert [Status(s) for s in b.status[:8]].count(Status.OK) == 5
    assert f.publish(eng) == 2
    evs = list(c.events())
    assert [e.kind for e in evs] == ["soft-expire", "hard-expire"]
    assert all(e.slot == h.slot and e.sa_id == h.sa_id and e.packets == 5 for e in evs)
    assert f.publish(eng) == 0                 # flags already reported
    ctr = c.counters(h.slot)
    assert ctr.stats.packets == 5 and ctr.stats.flags & SAFlag.HARD_EXPIRED
    assert ctr.seq_reserved >= ctr.stats.seq
    # Reading the hard-expire deleted the SA: keys gone from the slot, and the fastpath drops it.
    assert c.sa(h.slot) is None and c.lookup_spi(0x2000) is None
    assert f.sync(eng).removed == [h.slot]


def test_seq_exhausted_event(pair):
    c, f = pair
    eng = engines.create("best", capacity=64)
    h = c.install_sa(shm_sa(0x2000, enc_key=KEY, seq=(1 << 32) - 1), "out")
    f.sync(eng)
    b = Batch(capacity=2)
    b.extend([_ipv4()] * 2, sa=h.slot)
    f.reserve_batch(b.sa, b.n)
    eng.outbound(b)
    assert [Status(s) for s in b.status[:2]] == [Status.OK, Status.SEQ_EXHAUSTED]
    f.publish(eng)
    assert [e.kind for e in c.events()] == ["seq-exhausted"]


def test_auth_failure_burst_raises_one_alarm_per_threshold(pair):
    c, f = pair
    c.hdr.alarm_threshold = 10
    c.hdr.alarm_window_ns = 10**12
    st = ffi.new("struct ipsg_sa_stats *")
    stats_to_c(SAStats(drops={Status.AUTH_FAILED: 9}), st)
    assert lib.ipsg_shm_ctr_update(f.handle, 1, 1, 77, st, 1000) == 0
    stats_to_c(SAStats(drops={Status.AUTH_FAILED: 12, Status.REPLAY: 3}), st)
    assert lib.ipsg_shm_ctr_update(f.handle, 1, 1, 77, st, 2000) == 1
    stats_to_c(SAStats(drops={Status.AUTH_FAILED: 15, Status.REPLAY: 30}), st)
    assert lib.ipsg_shm_ctr_update(f.handle, 1, 1, 77, st, 3000) == 1
    evs = list(c.events())
    assert [(e.kind, e.packets) for e in evs] == [("alarm-auth", 12), ("alarm-replay", 30)]


def test_acquire_is_rate_limited_per_policy(pair):
    c, f = pair
    c.hdr.acquire_interval_ns = 10**12
    idx = c.add_policy(Policy("10.0.0.0/24", "10.0.1.0/24", action=PROTECT))
    m = f.lookup_policy("10.0.0.1", "10.0.1.1", 17, 1, 2)
    assert m.policy == idx and m.action == PROTECT and m.sas == ()
    assert f.acquire(m.policy, "10.0.0.1", "10.0.1.1", 17, 1, 2)
    assert not f.acquire(m.policy, "10.0.0.9", "10.0.1.9", 17, 1, 2)
    other = c.add_policy(Policy("10.0.0.0/24", "10.0.2.0/24", action=PROTECT))
    assert f.acquire(other, "10.0.0.1", "10.0.2.1")
    evs = list(c.events())
    assert [(e.kind, e.policy, e.src, e.dst, e.proto, e.sport, e.dport) for e in evs] == [
        ("acquire", idx, "10.0.0.1", "10.0.1.1", 17, 1, 2), ("acquire", other, "10.0.0.1", "10.0.2.1", 0, 0, 0)]


def test_full_event_ring_counts_drops(pair):
    c, f = pair
    c.hdr.acquire_interval_ns = 0
    for _ in range(20):
        f.acquire(0, "10.0.0.1", "10.0.1.1")
    assert c.events_dropped == 4
    assert len(list(c.events())) == 16
    assert f.acquire(0, "10.0.0.1", "10.0.1.1")


def test_counters_carry_over_an_in_place_update(pair):
    c, f = pair
    eng = engines.create("best", capacity=64)
    h = c.install_sa(shm_sa(0x2000, enc_key=KEY, lifetime=Lifetime(hard_packets=6)), "out")
    f.sync(eng)
    b = Batch(capacity=4)
    b.extend([_ipv4()] * 4, sa=h.slot)
    f.reserve_batch(b.sa, b.n)
    eng.outbound(b)
    f.publish(eng)
    c.update_sa(h.slot, shm_sa(0x2000, enc_key=KEY, lifetime=Lifetime(hard_packets=6), ttl=9), "out")
    assert f.sync(eng).installed == [h.slot]
    b.clear()
    b.extend([_ipv4()] * 4, sa=h.slot)
    f.reserve_batch(b.sa, b.n)
    eng.outbound(b)
    # Same SA id: 4 packets already counted, so only 2 more fit the hard limit, and the
    # sequence numbers continue at 5.
    assert [Status(s) for s in b.status[:4]].count(Status.OK) == 2
    seqs = [int.from_bytes(b.packet(i)[24:28], "big") for i in range(2)]
    assert seqs == [5, 6]
    f.publish(eng)
    assert c.counters(h.slot).stats.packets == 6
