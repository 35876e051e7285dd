"""The control side of ``ipsecgw bench dpdk`` (gateway mode): a live process holding the region.

``python -m control.bench_dpdk_control REGION DIRECTION`` creates the shared-memory region with
``control.shm`` as the control daemon does: the SPD (a PROTECT policy for the benchmark's flows bound
to the outbound SA, and a catch-all DISCARD below it) and one AES-128-GCM tunnel CHILD SA (both
directions), prints ``ready``, and then stays attached: every 100 ms it installs or deletes another,
unrelated inbound SA (so the fastpath's between-slices sync has real work: placement, a session made or
freed), heartbeats and drains the event ring, until stdin closes or SIGTERM.  On exit it prints the
number of SA changes it made as JSON and removes the region.  No key material is printed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import sys
import time

CHANGE_EVERY = 0.1
OUT_SPI, IN_SPI, CHURN_SPI = 0x105, 0x205, 0x3000
FLOWS_SRC, FLOWS_DST = "192.168.0.0/24", "192.168.105.0/24"     # fastpath.bench.dpdk.plaintext_frames


def _churn_sa(n: int):
    from cdefs.sa import SA

    return SA(spi=CHURN_SPI + n % 0x1000, src=ipaddress.ip_address("172.16.9.9"),
              dst=ipaddress.ip_address("172.16.2.5"), enc="aes-gcm-128", enc_key=os.urandom(20))


def main(argv: list[str]) -> int:
    from control.shm import DISCARD, PROTECT, ControlRegion, Policy
    from fastpath.bench.dpdk import bench_sa
    from fastpath.shm import Capacities

    path, direction = argv[0], argv[1]
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    region = ControlRegion.create(path, Capacities(n_sa=64, n_spd=64, cmd_ring=256, evt_ring=256))
    changes = 0
    try:
        # the benchmark's SA is the one its direction uses; the other direction of the CHILD SA is there too
        sa = bench_sa(direction)
        other = bench_sa("in" if direction == "out" else "out")
        other.spi = IN_SPI if direction == "out" else OUT_SPI + 0x1000
        other.src, other.dst = sa.dst, sa.src
        out_sa, in_sa = (sa, other) if direction == "out" else (other, sa)
        out_slot = region.install_sa(out_sa, "out").slot
        region.install_sa(in_sa, "in")
        region.add_policy(Policy(src=FLOWS_SRC, dst=FLOWS_DST, action=PROTECT, priority=100), (out_slot,),
                          commit=False)
        region.add_policy(Policy(action=DISCARD, priority=60000), commit=False)
        region.commit_policies()
        print("ready", flush=True)
        extra: int | None = None
        next_change = time.monotonic() + CHANGE_EVERY
        while not stop:
            r, _, _ = select.select([sys.stdin], [], [], max(0.0, next_change - time.monotonic()))
            if r and not sys.stdin.readline():
                break                                   # the benchmark closed our stdin: done
            if time.monotonic() < next_change:
                continue
            next_change += CHANGE_EVERY
            if extra is None:
                extra = region.install_sa(_churn_sa(changes), "in").slot
            else:
                region.delete_sa(extra)
                extra = None
            changes += 1
            region.heartbeat()
            for _ in region.events():
                pass
    finally:
        region.unlink()
        region.close()
    print(json.dumps({"sa_changes": changes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
