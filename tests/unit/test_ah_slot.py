"""An AH SA in the one C SA description (``struct ipsg_sa_params``, the region's slot): the protocol and AH's
algorithm codes survive both install paths, and a C engine's own check of the parameters takes one and
refuses what AH cannot be."""

from __future__ import annotations

import pytest
from support.ah import make_ah_sa
from support.engines import new_engine

from cdefs import defines
from cdefs.algorithms import AH_INTEG_ALGS
from cdefs.sa import Mode, TrafficSelector
from cdefs.sa_params import c_params
from control.shm import ControlRegion
from fastpath.engines import present_names
from fastpath.shm import Capacities, ffi, sa_to_params

_E = defines("esp.h")


@pytest.fixture
def region(shm_path):
    r = ControlRegion.create(shm_path, Capacities(n_sa=16, n_spd=4, cmd_ring=16, evt_ring=16))
    yield r
    r.close()


def _slot_bytes(region: ControlRegion, slot: int) -> bytes:
    cur = region.read_slot(slot)
    return bytes(ffi.buffer(ffi.addressof(cur, "p"), ffi.sizeof("struct ipsg_sa_params")))


@pytest.mark.parametrize("integ", sorted(AH_INTEG_ALGS))
@pytest.mark.parametrize("family", (4, 6))
def test_ah_sa_round_trips_through_the_slot(region, integ, family):
    sa = make_ah_sa(integ, family=family, mode=Mode.TRANSPORT, esn=True, seq=1 << 33, replay_window=1024)
    p = sa_to_params(sa, "in")
    assert p.proto == _E["IPSG_PROTO_AH"] and p.enc == _E["IPSG_ENC_NULL"] and p.enc_key_len == 0
    assert p.integ == AH_INTEG_ALGS[integ].code and p.integ_key_len == len(sa.integ_key)
    want = bytes(ffi.buffer(p, ffi.sizeof("struct ipsg_sa_params")))
    h = region.install_sa(sa, "in")                      # the argument path (no selectors)
    assert _slot_bytes(region, h.slot) == want
    assert region.sa(h.slot)[:2] == (sa, "in")
    ts = make_ah_sa(integ, family=family, local_ts=[TrafficSelector.any(family)])
    h2 = region.install_sa(ts, "out")                    # the struct path
    assert region.sa(h2.slot)[:2] == (ts, "out")


def test_esp_slot_bytes_unchanged_by_the_protocol_field():
    """proto lives in what was padding: an ESP SA's bytes have it zero (IPSG_PROTO_ESP) and no field moved."""
    assert _E["IPSG_PROTO_ESP"] == 0
    assert ffi.offsetof("struct ipsg_sa_params", "proto") == ffi.offsetof("struct ipsg_sa_params", "dport") + 2
    assert ffi.offsetof("struct ipsg_sa_params", "replay_window") == ffi.offsetof("struct ipsg_sa_params", "proto") + 2


_AH_REFUSALS = {
    "encryption": (lambda p: setattr(p, "enc", _E["IPSG_ENC_AES_CBC"]), b"an AH SA takes no encryption algorithm"),
    "udp-encap": (lambda p: setattr(p, "udp_encap", 1), b"AH cannot be UDP-encapsulated"),
    "gmac-key": (lambda p: setattr(p, "integ_key_len", 19), b"bad AES-GMAC key length"),
    "integ-code": (lambda p: setattr(p, "integ", 99), b"unknown AH integrity algorithm"),
    "protocol": (lambda p: setattr(p, "proto", 7), b"unknown IPsec protocol"),
}


@pytest.mark.parametrize("engine", [n for n in present_names() if n != "reference"])
@pytest.mark.parametrize("case", sorted(_AH_REFUSALS))
def test_c_engine_checks_ah_params(engine, case):
    """Below the Python wrapper: the C check of the SA parameters (what the fastpath's region sync reaches
    with a slot's bytes) takes a well-formed AH SA and refuses what AH cannot be, saying what."""
    e = new_engine(engine)
    err = e._ffi.new("char[200]")
    with c_params(e._ffi, make_ah_sa("aes-gmac-128"), "in") as p:
        assert e._lib.ipsg_sa_add(e._engine(), 0, p, err, 200) == 0
        spoil, why = _AH_REFUSALS[case]
        spoil(p)
        assert e._lib.ipsg_sa_add(e._engine(), 1, p, err, 200) == -1
    assert e._ffi.string(err).startswith(why)
