"""The fastpath process with DPDK I/O (``gateway.fastpath.io: dpdk``), run by ``ipsecgw fastpath -c CONFIG``.

``ipsecgw fastpath`` (which ``ipsecgw run`` supervises) runs this instead of the kernel-I/O fastpath when
``io`` is ``dpdk``, so the supervisor's restarts and warm standby serve both.  One thread:

- EAL in this process (``--no-huge``, the configured vdevs / PCI devices and cores), the region attached
  (waiting for control to create it), one ``GatewayWorker`` on the clear and protected ports;
- loop: the C worker polls both ports for ``slice_ms`` (GIL released; all per-packet work is C), then
  Python applies control's SA changes with ``sync_region`` (the kernel fastpath's code), retries packets
  held for an ACQUIRE or a not-yet-synced SA, resolves next-hop MACs the worker missed, and every 100 ms
  publishes counters and events (``FastpathRegion.publish``), drops packets held too long and re-checks
  the kernel guards (fastpath/dpdk/kernel.py).  The ports never stop: SA install, rekey and delete
  happen between slices, and an old inbound SA decrypts until control deletes it.
- every SA is placed (fastpath.placement over the devices this EAL discovered) and gets its session on
  that rung, falling back with the reason when a session cannot be made (fastpath/dpdk/sessions.py);
  the placement of every installed slot goes into the worker's status file (fastpath/dpdk/status.py),
  where control's ``list-sas`` reads it: the region's SA slots are control's to write, so the
  fastpath's answer travels on the channel the fastpath owns.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from fastpath.daemon import (
    HOLD_TIMEOUT,
    PUBLISH_EVERY,
    drop_sessions,
    pid_alive,
    serve_until_signal,
    wait_for_region,
)
from fastpath.dpdk import eal
from fastpath.dpdk.gw import GatewayWorker
from fastpath.dpdk.kernel import Address, Blackholes, Guard, Neighbours, interface_address, local_addresses
from fastpath.dpdk.status import remove_status, write_status
from fastpath.placement import Placement
from fastpath.plan import FastpathPlan
from fastpath.region_sync import sync_region
from fastpath.shm import RegionError

log = logging.getLogger("ipsecgw.fastpath")

ENGINE = "dpdk"            # per SA: a DPDK crypto session or the ESP core's ipsec-mb (``placements`` in status)
GUARD_EVERY = 1.0
RUNTIME_DIR = "/var/run/dpdk"   # EAL's runtime directories, for root


class DpdkFastpath:
    def __init__(self, plan: FastpathPlan, region_timeout: float = 30.0):
        fp = plan.settings
        d = fp.dpdk
        if d is None:
            raise ValueError("gateway.fastpath.dpdk is missing (io: dpdk)")
        self.plan, self.d = plan, d
        self.stop_requested = False
        # One EAL runtime directory per gateway (named after its region), not per pid: a fastpath the
        # supervisor restarts after a crash takes over its predecessor's instead of leaving one behind.
        self.file_prefix = "ipsecgw-gw-" + hashlib.sha1(os.path.abspath(plan.shm_path).encode()).hexdigest()[:12]
        self.region = wait_for_region(plan.shm_path, region_timeout)
        self.guard: Guard | None = None
        self.blackholes: Blackholes | None = None
        self.worker: GatewayWorker | None = None
        self._published_changes = -1
        log.debug("region attached")
        try:
            eal.init(eal.eal_args(d.vdevs, memory_mb=d.memory_mb, lcores=d.cores, pci=d.pci, extra=d.eal_args,
                                  file_prefix=self.file_prefix))
            log.debug("EAL up")
            self.guard = Guard([d.clear_interface, d.protected_interface])
            self.blackholes = Blackholes(list(plan.routes))
            self.neigh = Neighbours({"clear": d.clear_interface, "protected": d.protected_interface})
            snap = self.neigh.snapshot()
            src4 = interface_address(d.clear_interface, 4)
            src6 = interface_address(d.clear_interface, 6)
            self.worker = GatewayWorker(self.region, d.clear_port, d.protected_port, burst=d.burst,
                                        outer_mtu=fp.outer_mtu, ike_port=plan.ike_port, natt_port=plan.natt_port,
                                        idle_sleep_us=d.idle_sleep_us, icmp_src4=str(src4) if src4 else None,
                                        icmp_src6=str(src6) if src6 else None, on_place=self._placed)
            log.debug("worker up")
            for a in local_addresses():
                self.worker.add_local(a)
            for dst, mac in self.neigh.restore(snap).items():
                self.worker.set_neighbour(dst, mac)
            self.pending: dict[Address, float] = {}      # destinations missing a MAC -> first missed
            # the peers are the first next hops anyone needs: ask now, not on the first ESP packet
            for a in plan.peer_addrs:
                if ipaddress.ip_address(a) not in self.neigh.macs:
                    self.pending.setdefault(ipaddress.ip_address(a), time.monotonic())
            self._resolve(time.monotonic())
        except BaseException:
            self.close()
            raise
        cdevs = ", ".join(f"{c.name} ({c.driver})" for c in self.worker.caps.cryptodevs) if self.worker.caps else ""
        log.info("fastpath up: io dpdk, engine %s (cryptodevs: %s), clear %s (%s, %s), protected %s (%s, %s), "
                 "burst %d, slice %d ms, blackhole routes %s, region %s", ENGINE, cdevs or "none", d.clear_port,
                 d.clear_interface,
                 self.worker.clear_mac.hex(":"), d.protected_port, d.protected_interface,
                 self.worker.prot_mac.hex(":"), d.burst, d.slice_ms, ", ".join(self.blackholes.routes) or "none",
                 self.region.path)

    @staticmethod
    def _placed(slot: int, p: Placement) -> None:
        skipped = "; ".join(f"{c}: {why}" for c, why in p.skipped if c.device != "-")
        log.info("SA slot %d (SPI 0x%08x %s) on %s%s", slot, p.spi, p.direction, p.engine,
                 f" (not on {skipped})" if skipped else "",
                 extra={"spi": f"0x{p.spi:08x}", "dir": str(p.direction), "slot": slot})

    def sync(self) -> bool:
        """Apply control's changes; True if held packets may now find an SA."""
        assert self.worker is not None
        r = sync_region(self.region, self.worker.engine, self.worker.set_sa)
        if self.worker.engine.changes != self._published_changes:
            self._write_status()         # list-sas shows a new SA's placement now, not a second later
        return bool(r.installed or r.removed or r.spd_changed)

    def _write_status(self) -> None:
        w = self.worker
        assert w is not None
        placed = w.engine.placements()
        self._published_changes = w.engine.changes
        write_status(self.plan.shm_path,
                     {"engine": ENGINE, "engines_used": sorted({p["label"] for p in placed.values()}),
                      "placements": {str(slot): p for slot, p in placed.items()}, "pid": os.getpid(),
                      "crypto_sessions": asdict(cs) if (cs := w.engine.table.stats()) is not None else None,
                      **w.stats()})

    def _resolve(self, now: float) -> None:
        assert self.worker is not None
        for dst in self.worker.misses():
            self.pending.setdefault(dst, now)
        if not self.pending:
            return
        found = self.neigh.resolve(sorted(self.pending, key=str), now)
        for dst, mac in found.items():
            self.worker.set_neighbour(dst, mac)
            self.pending.pop(dst, None)
            log.debug("next hop for %s: %s", dst, mac.hex(":"))
        if found:
            self.worker.retry_neighbours()

    def run(self) -> int:
        w = self.worker
        assert w is not None and self.guard is not None
        slice_s = self.d.slice_ms / 1000
        next_publish = next_guard = 0.0
        while not self.stop_requested:
            needs_sync = w.run(slice_s)
            if self.sync() or needs_sync:
                w.retry()
            now = time.monotonic()
            self._resolve(now)
            if now >= next_publish:
                self.region.publish(w.engine)
                # binding a policy to its new SA sends no command, so a sync can come between control's SA
                # install and its bind: held packets get another look here at the latest
                w.retry()
                w.expire(HOLD_TIMEOUT)
                for dst, mac in self.neigh.refresh(now).items():
                    w.set_neighbour(dst, mac)
                # a destination nobody resolved within the hold time: ask again when it is next missed
                self.pending = {d: t for d, t in self.pending.items() if now - t < HOLD_TIMEOUT}
                next_publish = now + PUBLISH_EVERY
            if now >= next_guard:
                self.guard.check()
                self._write_status()
                next_guard = now + GUARD_EVERY
        return 0

    def _control_running(self) -> bool:
        """Control's process still exists (``ipsecgw run`` stops control before the fastpath)."""
        return pid_alive(int(self.region.hdr.control_pid) if self.region.hdr is not None else 0)

    def close(self) -> None:
        """Counters published, SAs dropped (keys zeroed), ports closed, region detached."""
        w, self.worker = self.worker, None
        if w is not None:
            try:
                self.region.publish(w.engine)
            except Exception:  # noqa: BLE001 - closing regardless
                log.exception("final publish failed")
            drop_sessions(self.region, w.engine)
            done = w.stats()
            w.close()
            remove_status(self.plan.shm_path)
            log.info("fastpath stopped: %s", done)
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        if self.blackholes is not None:
            if self._control_running():
                log.info("control is still running: blackhole routes %s kept (traffic for the remote selectors "
                         "is dropped, not leaked, until a fastpath runs again)", ", ".join(self.blackholes.routes))
            else:
                self.blackholes.remove()
        self.region.close()
        shutil.rmtree(Path(RUNTIME_DIR) / self.file_prefix, ignore_errors=True)


def serve(plan: FastpathPlan, wait: float = 30.0) -> int:
    """Run the DPDK fastpath until SIGTERM/SIGINT (``ipsecgw fastpath`` calls this when io is dpdk)."""
    if plan.settings.io != "dpdk":
        log.error("gateway.fastpath.io is %s, not dpdk", plan.settings.io)
        return 2
    return serve_until_signal(lambda: DpdkFastpath(plan, region_timeout=wait), (RegionError, eal.EalError, OSError))
