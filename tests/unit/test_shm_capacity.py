"""The region at the sizes the design must hold: 1,000,000 SAs and 100,000 policies."""

from __future__ import annotations

import ipaddress
import random
import time

import numpy as np
import pytest
from support.shm_helpers import shm_sa

from control.shm import BYPASS, DISCARD, PROTECT, ControlRegion, Policy
from fastpath.shm import Capacities, FastpathRegion, ffi, lib, sa_to_params

N_SA = 1_000_000
N_SPD = 100_000


@pytest.mark.slow   # 10 to 20 s here: a million slots and 100,000 policies are filled from Python
def test_million_sas_and_hundred_thousand_policies(shm_path):
    t0 = time.perf_counter()
    c = ControlRegion.create(shm_path, Capacities(n_sa=N_SA, n_spd=N_SPD, cmd_ring=1 << 16, evt_ring=1024))
    # Fill every slot.  The per-SA Python conversion is measured in bench/; here one template
    # params struct is written with a different SPI each time, through the same C install call.
    sa = shm_sa(0x100, enc_key=bytes(20), src="198.51.100.1", dst="198.51.100.2")
    p = sa_to_params(sa, "in")
    for slot in range(N_SA):
        p.spi = 0x100 + slot
        assert lib.ipsg_shm_sa_install(c.handle, slot, p, 1, 0, slot + 1, 0) >= 1
    c.close()
    fill = time.perf_counter() - t0

    # A restarted control reads a million SAs back.
    t = time.perf_counter()
    c = ControlRegion.attach(shm_path)
    reattach = time.perf_counter() - t
    assert len(c.installed()) == N_SA and c.hdr.hash_live == N_SA
    with pytest.raises(Exception, match="all 1000000 SA slots are in use"):
        c.install_sa(sa, "in")

    # Every SPI is found, at its slot; SPIs never installed are not.
    spis = np.arange(0x100, 0x100 + N_SA, dtype=np.uint32)
    out = np.empty(N_SA, dtype=np.int64)
    lib.ipsg_shm_spi_lookup_many(c.handle, N_SA, ffi.from_buffer("uint32_t[]", spis),
                                 ffi.from_buffer("int64_t[]", out))
    assert np.array_equal(out, np.arange(N_SA))
    missing = np.arange(0x100 + N_SA, 0x100 + N_SA + 1000, dtype=np.uint32)
    out2 = np.empty(1000, dtype=np.int64)
    lib.ipsg_shm_spi_lookup_many(c.handle, 1000, ffi.from_buffer("uint32_t[]", missing),
                                 ffi.from_buffer("int64_t[]", out2))
    assert (out2 == -1).all()

    # The fastpath's first scan finds all of them waiting.
    f = FastpathRegion.attach(shm_path)
    cursor = ffi.new("uint32_t *", 0)
    buf = ffi.new("uint32_t[]", N_SA)
    assert lib.ipsg_shm_scan(f.handle, cursor, buf, N_SA) == N_SA

    # 100,000 policies: compile and spot-check against a direct check of the chosen rule.
    rng = random.Random(7)
    for _ in range(N_SPD):
        net = ipaddress.ip_network((0x0A000000 + rng.randrange(1 << 16) * 256, 24))
        c.add_policy(Policy("0.0.0.0/0", str(net), action=rng.choice([PROTECT, BYPASS, DISCARD]),
                            priority=rng.randrange(100)), commit=False)
    t = time.perf_counter()
    assert c.commit_policies() == N_SPD
    compile_s = time.perf_counter() - t
    for _ in range(200):
        dst = ipaddress.ip_address(0x0A000000 + rng.randrange(1 << 24))
        m = f.lookup_policy("192.0.2.1", str(dst))
        if m is not None:
            assert dst in ipaddress.ip_network(c.policy(m.policy).dst)
    print(f"fill {fill:.1f}s reattach {reattach:.2f}s compile 100k {compile_s * 1000:.0f}ms")
    f.close()
    c.close()
