"""install_sa's fast path (ipsg_shm_sa_install_fields) and the bulk install_sas."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.shm_helpers import shm_sa

from cdefs.algorithms import ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Lifetime, Mode, SAError, TrafficSelector
from control.shm import ControlRegion
from fastpath.shm import Capacities, RegionError, ffi, lib, sa_to_params

KEY = bytes(range(20))   # what a rolled-back batch and a delete must leave no trace of


@pytest.fixture
def region(shm_path):
    r = ControlRegion.create(shm_path, Capacities(n_sa=64, n_spd=4, cmd_ring=16, evt_ring=16))
    yield r
    r.close()


@st.composite
def sas(draw):
    v6 = draw(st.booleans())
    addr = st.integers(0, 2**128 - 1 if v6 else 2**32 - 1).map(
        lambda i: ipaddress.IPv6Address(i) if v6 else ipaddress.IPv4Address(i))
    enc = draw(st.sampled_from(sorted(ENC_ALGS)))
    alg = ENC_ALGS[enc]
    integ = None if alg.aead else draw(st.sampled_from(sorted(INTEG_ALGS)))
    esn = draw(st.booleans())
    u32 = st.integers(0, 2**32 - 1)
    return SA(spi=draw(st.integers(256, 2**32 - 1)), src=draw(addr), dst=draw(addr), enc=enc,
              enc_key=draw(st.binary(min_size=alg.config_key_len, max_size=alg.config_key_len)), integ=integ,
              integ_key=draw(st.binary(min_size=INTEG_ALGS[integ].key_len, max_size=INTEG_ALGS[integ].key_len))
              if integ else b"",
              mode=draw(st.sampled_from(list(Mode))), esn=esn,
              seq=draw(st.integers(1, 2**64 if esn else 2**32)), replay_window=draw(st.integers(0, 4096)),
              udp_encap=draw(st.booleans()), sport=draw(st.integers(1, 65535)), dport=draw(st.integers(1, 65535)),
              ttl=draw(st.integers(1, 255)), df=draw(st.sampled_from(["copy", "set", "clear"])),
              dscp=draw(st.one_of(st.none(), st.integers(0, 63))), ecn=draw(st.sampled_from(["normal", "compat"])),
              flowlabel=draw(st.sampled_from(["copy", "zero"])),
              lifetime=Lifetime(draw(u32), draw(u32), draw(u32), draw(u32)))


def _slot_params(region: ControlRegion, slot: int) -> bytes:
    cur = region.read_slot(slot)
    assert lib.ipsg_shm_digest(ffi.addressof(cur, "p")) == cur.digest
    return bytes(ffi.buffer(ffi.addressof(cur, "p"), ffi.sizeof("struct ipsg_sa_params")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sas(), st.sampled_from(["in", "out"]))
def test_fields_path_writes_the_same_bytes_as_the_struct_path(region, sa, direction):
    """Every field, byte for byte: the argument path and the cffi struct path agree."""
    want = bytes(ffi.buffer(sa_to_params(sa, direction), ffi.sizeof("struct ipsg_sa_params")))
    h = region.install_sa(sa, direction)
    assert _slot_params(region, h.slot) == want
    assert region.sa(h.slot)[:2] == (sa, direction)
    region.delete_sa(h.slot)


def test_install_sas_installs_each_like_install_sa(region):
    ts = [TrafficSelector.from_network("10.0.0.0/8", 6, 80, 80)]
    batch = [(shm_sa(0x100 + i, enc_key=KEY), "in" if i % 2 else "out") for i in range(10)]
    batch.append((shm_sa(0x200, enc_key=KEY, local_ts=ts), "out"))
    gen = region.hdr.generation
    handles = region.install_sas(batch, placement=2)
    assert [h.sa_id for h in handles] == list(range(handles[0].sa_id, handles[0].sa_id + 11))
    assert region.hdr.generation == gen + 11           # one command + generation bump each
    for h, (sa, direction) in zip(handles, batch, strict=True):
        cur = region.read_slot(h.slot)
        assert cur.state == 1 and cur.placement == 2 and cur.id == h.sa_id and cur.version == h.version
        assert region.sa(h.slot) == (sa, direction, h.sa_id)
        assert region.lookup_spi(sa.spi) == h.slot
    assert region.install_sa(shm_sa(0x300, enc_key=KEY), "in").sa_id == handles[-1].sa_id + 1


def test_install_sas_is_all_or_nothing(region):
    bad = shm_sa(0x101, enc_key=KEY)
    bad.ttl = 0
    with pytest.raises(SAError, match="ttl"):
        region.install_sas([(shm_sa(0x100, enc_key=KEY), "in"), (bad, "in")])
    table = bytes(ffi.buffer(lib.ipsg_shm_base(region.handle) + region.hdr.off_sa,
                             64 * ffi.sizeof("struct ipsg_shm_sa")))
    assert KEY not in table          # the SA installed before the bad one is gone, keys too
    with pytest.raises(RegionError, match="65 SAs do not fit the 64 free SA slots"):
        region.install_sas([(shm_sa(0x100 + i, enc_key=KEY), "in") for i in range(65)])
    assert region.installed() == [] and region.lookup_spi(0x100) is None
    assert len(region.install_sas([(shm_sa(0x100 + i, enc_key=KEY), "in") for i in range(64)])) == 64


def test_fields_path_keeps_update_and_delete_semantics(region):
    h = region.install_sa(shm_sa(0x100, enc_key=KEY), "out")
    h2 = region.update_sa(h.slot, shm_sa(0x101, enc_key=KEY, seq=9), "out")
    assert h2.version == h.version + 1 and region.lookup_spi(0x100) is None and region.lookup_spi(0x101) == h.slot
    region.delete_sa(h.slot)
    raw = bytes(ffi.buffer(lib.ipsg_shm_base(region.handle) + region.hdr.off_sa
                           + h.slot * ffi.sizeof("struct ipsg_shm_sa"), ffi.sizeof("struct ipsg_shm_sa")))
    assert KEY not in raw
