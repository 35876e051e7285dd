"""Two real processes on one region: a writer hammering SA slots, a reader checking every copy.

Each slot carries a digest of its parameters, written inside the seqlock; a
reader that ever saw half of one write and half of another would find a
digest that does not match.  A raw copy taken without the seqlock is checked
the same way, to show the test can see tearing when it happens.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support.shm_helpers import child_env

from control.shm import ControlRegion
from fastpath.shm import Capacities

WRITER = textwrap.dedent("""
    import os, sys
    from fastpath.shm import ffi, lib, Region
    path, n_slots, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    err = ffi.new("char[]", 256)
    h = lib.ipsg_shm_attach(path.encode(), err, 256)
    assert h != ffi.NULL, ffi.string(err)
    # 64 different parameter sets, every byte random, so two writes never share content.
    variants = ffi.new("struct ipsg_sa_params[]", 64)
    size = ffi.sizeof("struct ipsg_sa_params")
    ffi.memmove(variants, os.urandom(64 * size), 64 * size)
    writes = 0
    print("ready", flush=True)
    while not os.path.exists(stop):
        for _ in range(2000):
            lib.ipsg_shm_sa_write(h, writes % n_slots, ffi.addressof(variants, writes % 64), 1, 0, writes)
            writes += 1
    print(writes, flush=True)
""")

READER = textwrap.dedent("""
    import sys
    from fastpath.shm import ffi, lib
    path, n_slots, rounds, raw_rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    err = ffi.new("char[]", 256)
    h = lib.ipsg_shm_attach(path.encode(), err, 256)
    assert h != ffi.NULL, ffi.string(err)
    bad = ffi.new("uint64_t *")
    reads = lib.ipsg_shm_audit(h, 0, n_slots, rounds, bad)
    # The same check on copies taken without the seqlock.
    base = lib.ipsg_shm_base(h) + lib.ipsg_shm_header(h).off_sa
    size = ffi.sizeof("struct ipsg_shm_sa")
    copy = ffi.new("struct ipsg_shm_sa *")
    torn_raw = 0
    for i in range(raw_rounds):
        ffi.memmove(copy, base + (i % n_slots) * size, size)
        if lib.ipsg_shm_digest(ffi.addressof(copy, "p")) != copy.digest:
            torn_raw += 1
    print(reads, bad[0], torn_raw, flush=True)
""")


def test_reader_never_sees_a_torn_slot(shm_path, tmp_path):
    n_slots = 4   # few slots: the reader and the writer collide on nearly every read
    region = ControlRegion.create(shm_path, Capacities(n_sa=n_slots, n_spd=16))
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(shm_path), str(n_slots), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert writer.stdout.readline().strip() == "ready"
        rounds = 1_000_000   # 4,000,000 reads
        reader = subprocess.run([sys.executable, "-c", READER, str(shm_path), str(n_slots), str(rounds), "300000"],
                                capture_output=True, text=True, env=child_env(), timeout=120)
        assert reader.returncode == 0, reader.stderr
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    writes = int(out.strip())
    reads, bad, torn_raw = map(int, reader.stdout.split())
    print(f"reads={reads} bad={bad} writes={writes} torn_raw={torn_raw}")
    assert bad == 0, f"{bad} of {reads} seqlocked reads saw a torn slot"
    assert reads >= 4 * rounds * 0.99
    assert writes > 100_000, "the writer did not run alongside the reader"
    # Without the seqlock the same check does see tearing: the test has teeth.
    assert torn_raw > 0, f"no torn raw copy in 300000 while {writes} writes ran"
    region.close()
