"""Applying control's SA changes between batches: shared by the kernel-I/O fastpath (fastpath/daemon.py)
and the DPDK worker (fastpath/dpdk/daemon.py).

``FastpathRegion.sync`` installs and removes SAs in the engine; the I/O side also keeps per-SA facts of
its own (the classifier's ESP overhead for the MTU check, the DPDK worker's sequence reservation cache).
``sync_region`` runs the sync, tells ``on_sa`` about every slot that changed (the SA and direction, or
None when it went away) and logs what happened, the same way for both.  An SA the engine refuses stays
out of the data plane only: control's IKE SA and its other CHILD SAs carry on.  An AH SA on an engine
without AH (the C engines until they serve it) is said so by name, "no AH in engine X".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cdefs.sa import SA, Direction
from fastpath.engines.base import Engine
from fastpath.shm import FastpathRegion, SyncResult, params_to_sa

log = logging.getLogger("ipsecgw.fastpath")


def sync_region(region: FastpathRegion, engine: Engine,
                on_sa: Callable[[int, SA | None, Direction | None], None]) -> SyncResult:
    """region.sync(engine), then on_sa(slot, sa, direction) per installed slot, on_sa(slot, None, None) per
    removed one; rejected slots are logged."""
    r = region.sync(engine)
    for slot in r.removed:
        on_sa(slot, None, None)
    for slot in r.installed:
        cur = region.read_slot(slot)
        if cur is None:
            continue
        try:
            sa, direction = params_to_sa(cur.p)
        except ValueError:
            continue
        on_sa(slot, sa, direction)
        log.info("SA slot %d installed: SPI 0x%08x %s, %s", slot, sa.spi, direction.name.lower(), sa.enc,
                 extra={"spi": f"0x{sa.spi:08x}", "dir": direction.name.lower(), "slot": slot})
    for slot, why in r.rejected.items():
        if _is_ah(region, slot):
            log.warning("SA slot %d not installed: no AH in engine %s (%s); AH traffic of this SA is dropped",
                        slot, engine.name, why)
        else:
            log.warning("SA slot %d not installed: %s", slot, why)
    return r


def _is_ah(region: FastpathRegion, slot: int) -> bool:
    cur = region.read_slot(slot)
    if cur is None:
        return False
    try:
        return params_to_sa(cur.p)[0].is_ah
    except ValueError:
        return False
