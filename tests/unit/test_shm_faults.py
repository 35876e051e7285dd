"""kill -9 either process: the other keeps going, the restarted one picks up where it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from support.shm_helpers import child_env, shm_sa

from control.shm import PROTECT, ControlRegion, Policy
from fastpath import engines
from fastpath.batch import Batch
from fastpath.shm import Capacities, FastpathRegion, ffi, lib
from fastpath.status import Status

KEY = bytes(range(20))

COMMON = textwrap.dedent(f"""
    import sys
    from support.shm_helpers import shm_sa
    KEY = {KEY!r}
""")

CONTROL = COMMON + textwrap.dedent("""
    from control.shm import ControlRegion, Policy, PROTECT
    from fastpath.shm import Capacities
    c = ControlRegion.create(sys.argv[1], Capacities(n_sa=256, n_spd=16, cmd_ring=64, evt_ring=64))
    out = c.install_sa(shm_sa(0x1111, enc_key=KEY), "out")
    c.install_sa(shm_sa(0x2222, enc_key=KEY, src="192.0.2.2", dst="192.0.2.1"), "in")
    c.add_policy(Policy("10.0.0.0/24", "10.0.1.0/24", action=PROTECT), sas=(out.slot,))
    print("ready", flush=True)
    # Keep writing (churn other slots) so the kill lands in the middle of control's work.
    i, prev = 0, None
    while True:
        h = c.install_sa(shm_sa(0x10000 + i, enc_key=KEY), "in", validate=False)
        if prev is not None:
            c.delete_sa(prev.slot)
        prev = h
        i += 1
""")

FASTPATH = COMMON + textwrap.dedent("""
    from fastpath import engines
    from fastpath.batch import Batch
    from fastpath.shm import FastpathRegion
    from scapy.layers.inet import IP, UDP
    f = FastpathRegion.attach(sys.argv[1])
    eng = engines.create("best", capacity=256)
    f.sync(eng)
    slot = f.lookup_spi(0x1111)
    pkt = bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=1, dport=2) / (b"x" * 64))
    b = Batch(capacity=32)
    n = 0
    while True:
        b.clear()
        b.extend([pkt] * 32, sa=slot)
        f.reserve_batch(b.sa, b.n)
        eng.outbound(b)
        top = max(int.from_bytes(b.packet(i)[24:28], "big") for i in range(b.n))
        n += 1
        if n % 8 == 0:
            f.publish(eng)
        print(top, flush=True)
""")


def _packet() -> bytes:
    from scapy.layers.inet import IP, UDP

    return bytes(IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=1, dport=2) / (b"x" * 64))


def _outbound(f: FastpathRegion, eng, slot: int, n: int = 8) -> list[int]:
    b = Batch(capacity=n)
    b.extend([_packet()] * n, sa=slot)
    f.reserve_batch(b.sa, b.n)
    eng.outbound(b)
    assert all(Status(s) == Status.OK for s in b.status[:n])
    return [int.from_bytes(b.packet(i)[24:28], "big") for i in range(n)]


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_kill_control_fastpath_keeps_forwarding_and_control_reconciles(shm_path):
    ctl = subprocess.Popen([sys.executable, "-c", CONTROL, str(shm_path)], stdout=subprocess.PIPE, text=True,
                           env=child_env())
    try:
        assert ctl.stdout.readline().strip() == "ready"
        f = FastpathRegion.attach(shm_path)
        eng = engines.create("best", capacity=256)
        f.sync(eng)
        out_slot = f.lookup_spi(0x1111)
        before = _outbound(f, eng, out_slot)
        time.sleep(0.3)   # control churning
    finally:
        _kill(ctl)
    # Control is gone: the fastpath keeps forwarding on what it has and keeps syncing.
    f.sync(eng)
    after = _outbound(f, eng, out_slot)
    assert after[0] == before[-1] + 1
    m = f.lookup_policy("10.0.0.5", "10.0.1.9")
    assert m.action == PROTECT and m.sas == (out_slot,)

    # A restarted control attaches, repairs whatever the kill tore, and reads everything back.
    c = ControlRegion.attach(shm_path)
    rec = c.reconcile()
    by_spi = {sa.spi: (slot, sa, d) for slot, (sa, d, _) in rec.sas.items()}
    assert by_spi[0x1111][0] == out_slot and by_spi[0x1111][2] == "out"
    assert by_spi[0x1111][1].enc_key == KEY
    assert by_spi[0x2222][2] == "in"
    assert list(rec.policies.values()) == [Policy("10.0.0.0/24", "10.0.1.0/24", action=PROTECT)]
    for slot in range(c.caps.n_sa):
        assert c.read_slot(slot) is not None, f"slot {slot} still torn after attach"
        assert lib.ipsg_shm_audit(c.handle, slot, 1, 1, ffi.new("uint64_t *")) == 1
    # Every installed SA is findable by SPI, every indexed SPI points at its SA.
    for slot, (sa, _, _) in rec.sas.items():
        assert c.lookup_spi(sa.spi) == slot
    # It can carry on: install a new SA, the running fastpath picks it up.
    h = c.install_sa(shm_sa(0x3333, enc_key=KEY, dst="192.0.2.3"), "out")
    assert h.slot in f.sync(eng).installed
    assert f.counters(out_slot).stats.packets >= 0
    after2 = _outbound(f, eng, out_slot)
    assert after2[0] == after[-1] + 1
    f.close()
    c.close()


def test_control_dead_mid_write_slot_is_freed_and_keys_zeroed(shm_path):
    c = ControlRegion.create(shm_path, Capacities(n_sa=8, n_spd=4, cmd_ring=16, evt_ring=16))
    h = c.install_sa(shm_sa(0x4444, enc_key=b"\xaa" * 20), "out")
    # What a writer killed between its two lock stores leaves behind: an odd lock word.
    slot = ffi.cast("struct ipsg_shm_sa *", lib.ipsg_shm_base(c.handle) + c.hdr.off_sa) + h.slot
    slot.lock += 1
    c.close()
    f = FastpathRegion.attach(shm_path)
    assert f.read_slot(h.slot) is None          # readers give up instead of spinning forever
    c = ControlRegion.attach(shm_path)
    assert c.repaired == 1
    assert c.read_slot(h.slot).state == 0 and c.lookup_spi(0x4444) is None
    raw = bytes(ffi.buffer(slot, ffi.sizeof("struct ipsg_shm_sa")))
    assert b"\xaa" * 20 not in raw
    assert c.reconcile().sas == {}
    f.close()
    c.close()


def test_kill_fastpath_restart_resumes_same_sas_and_sequence_never_goes_back(shm_path):
    c = ControlRegion.create(shm_path, Capacities(n_sa=256, n_spd=16, cmd_ring=64, evt_ring=64))
    out = c.install_sa(shm_sa(0x1111, enc_key=KEY), "out")
    inb = c.install_sa(shm_sa(0x2222, enc_key=KEY, src="192.0.2.2", dst="192.0.2.1"), "in")
    fp = subprocess.Popen([sys.executable, "-c", FASTPATH, str(shm_path)], stdout=subprocess.PIPE, text=True,
                          env=child_env())
    seen = 0
    try:
        for line in fp.stdout:
            seen = max(seen, int(line))
            if seen > 2000:
                break
    finally:
        _kill(fp)
    # Anything it sent after its last line is covered by the reservation, never by a lower number.
    reserved = c.counters(out.slot).seq_reserved
    assert reserved > seen

    f = FastpathRegion.attach(shm_path)
    eng = engines.create("best", capacity=256)
    res = f.sync(eng)
    assert sorted(res.installed) == sorted([out.slot, inb.slot])
    assert f.installed_slots() == sorted([out.slot, inb.slot])
    seqs = _outbound(f, eng, out.slot)
    assert seqs[0] >= reserved > seen
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    f.publish(eng)
    ctr = c.counters(out.slot)
    assert ctr.stats.packets >= 8 and ctr.stats.seq == seqs[-1] + 1   # counters carried over the restart
    assert c.fastpath_alive()
    f.close()
    c.close()
