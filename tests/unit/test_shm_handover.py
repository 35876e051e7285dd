"""The SA crosses into C once: the fastpath hands an engine the region slot's own bytes.

Control writes ``struct ipsg_sa_params`` into the slot; ``FastpathRegion.sync`` decodes it for its
own decisions but gives the C engines that same struct (with the counting fields of a resumed SA
rewritten), instead of encoding the SA a second time.
"""

from __future__ import annotations

import pytest
from support.shm_helpers import shm_sa

from cdefs import sa_params
from cdefs.sa import SA, Direction, Lifetime, TrafficSelector
from control.shm import ControlRegion
from fastpath.engines.openssl import OpenSSLEngine
from fastpath.engines.openssl import ffi as engine_ffi
from fastpath.shm import Capacities, FastpathRegion, ffi, sa_to_params

CBC_V6 = {"enc": "aes-cbc-128", "enc_key": bytes(range(16)), "integ": "hmac-sha256-128", "integ_key": bytes(32),
          "src": "2001:db8::1", "dst": "2001:db8::2"}


class RecordingEngine(OpenSSLEngine):
    """The openssl engine, keeping a copy of each params image it was handed."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.images: dict[int, bytes | None] = {}

    def add_sa(self, index, sa, direction, *, params=None):
        self.images[index] = None if params is None else bytes(params)
        super().add_sa(index, sa, direction, params=params)


@pytest.fixture
def pair(shm_path):
    c = ControlRegion.create(shm_path, Capacities(n_sa=16, n_spd=4, cmd_ring=16, evt_ring=16))
    f = FastpathRegion.attach(shm_path)
    yield c, f
    f.close()
    c.close()


def _encoded(sa: SA, direction: str) -> bytes:
    return bytes(ffi.buffer(sa_to_params(sa, direction), ffi.sizeof("struct ipsg_sa_params")))


def test_engine_gets_the_slot_bytes_which_equal_a_fresh_encoding(pair):
    c, f = pair
    plain = shm_sa(0x3001, **CBC_V6, lifetime=Lifetime(1000, 2000, 3, 4))
    with_ts = shm_sa(0x3002, **CBC_V6, local_ts=[TrafficSelector.from_network("2001:db8:1::/48", 6, 80, 80)],
                     remote_ts=[TrafficSelector.any(6)])
    h1 = c.install_sa(plain, "out")
    h2 = c.install_sa(with_ts, "in")
    eng = RecordingEngine(16)
    assert sorted(f.sync(eng).installed) == sorted([h1.slot, h2.slot])
    # byte for byte what encoding the SA again would have given: the engine sees no difference
    assert eng.images[h1.slot] == _encoded(plain, "out")
    assert eng.images[h2.slot] == _encoded(with_ts, "in")


def test_a_resumed_sa_carries_its_counting_fields_in_the_image(pair):
    c, f = pair
    eng = RecordingEngine(16)
    h = c.install_sa(shm_sa(0x3003, **CBC_V6, seq=7, lifetime=Lifetime(soft_packets=50, hard_packets=100)), "out")
    f.sync(eng)
    f.reserve({h.slot: 10})
    # a restarted fastpath finds counters of the same SA id: it resumes above the reservation,
    # with the limits that are left
    f.close()
    f2 = FastpathRegion.attach(c.path)
    try:
        ctr = f2.counters(h.slot)
        eng2 = RecordingEngine(16)
        f2.sync(eng2)
        p = engine_ffi.from_buffer("struct ipsg_sa_params *", eng2.images[h.slot])
        assert ctr.seq_reserved > 17 and p.seq == ctr.seq_reserved
        assert (p.soft_packets, p.hard_packets) == (50, 100)   # nothing sent yet: the limits are whole
    finally:
        f2.close()


def test_the_slot_copy_is_wiped_after_the_handover(pair, monkeypatch):
    c, f = pair
    kept = []
    real = FastpathRegion.read_slot

    def read_slot(self, slot):
        cur = real(self, slot)
        kept.append(cur)
        return cur

    monkeypatch.setattr(FastpathRegion, "read_slot", read_slot)
    h = c.install_sa(shm_sa(0x3004, **CBC_V6), "out")
    f.sync(RecordingEngine(16))
    handed = [cur for cur in kept if cur is not None and cur.p.spi == 0 and cur.id == h.sa_id]
    assert handed, "the copy handed to the engine still holds the SA"
    assert bytes(ffi.buffer(handed[0].p.enc_key)) == bytes(36)


def test_an_image_of_the_wrong_size_is_refused():
    sa = shm_sa(0x3005, **CBC_V6)
    with pytest.raises(ValueError, match="816|bytes"):
        with sa_params.c_params(engine_ffi, sa, Direction.OUT, bytes(10)):
            pass
