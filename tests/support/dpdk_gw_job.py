"""Run the DPDK gateway worker once from a JSON job: ``python -m support.dpdk_gw_job < job.json``.

For tests on deterministic vdevs (net_pcap): attach to a region control made (as the fastpath does), start
EAL on the job's vdevs, apply the region with ``sync_region``, seed the neighbour table and the local
addresses from the job, poll in slices for ``seconds`` (syncing and retrying between them, as
fastpath/dpdk/daemon.py does; ``publish_each_slice``: counters and events after every slice of
``slice`` seconds), publish counters, close the ports (net_pcap writes its tx files then) and
print the worker's counters as one JSON line.  No key material is printed.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from typing import Any


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from fastpath.dpdk import eal
    from fastpath.dpdk.gw import GatewayWorker
    from fastpath.region_sync import sync_region
    from fastpath.shm import FastpathRegion

    region = FastpathRegion.attach(job["region"])
    prefix = f"ipsecgw-job-{os.getpid()}"
    eal.init(eal.eal_args(job["vdevs"], memory_mb=int(job.get("memory_mb", 128)), lcores="0", file_prefix=prefix))
    w = GatewayWorker(region, job["clear"], job["protected"], burst=int(job.get("burst", 32)),
                      outer_mtu=int(job.get("outer_mtu", 1500)), idle_sleep_us=0,
                      icmp_src4=job.get("icmp_src4"))
    try:
        macs = {"clear": w.clear_mac.hex(":"), "protected": w.prot_mac.hex(":")}
        for a in job.get("local", []):
            w.add_local(ipaddress.ip_address(a))
        for a, mac in job.get("neighbours", {}).items():
            w.set_neighbour(ipaddress.ip_address(a), bytes.fromhex(mac.replace(":", "")))
        sync_region(region, w.engine, w.set_sa)
        end = time.monotonic() + float(job.get("seconds", 0.3))
        slice_s = float(job.get("slice", 0.01))
        posted = 0
        while time.monotonic() < end:
            if w.run(slice_s):
                sync_region(region, w.engine, w.set_sa)
                w.retry()
            if job.get("publish_each_slice"):   # as the daemon's 100 ms publish, but after every slice
                posted += region.publish(w.engine)
        posted += region.publish(w.engine)
        sas = sorted(w.engine.placements())
        missed = sorted(str(a) for a in w.misses())
        stats = w.stats()
    finally:
        w.close()
        region.close()
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)   # EAL's runtime files of this child
    return {"macs": macs, "stats": stats, "misses": missed, "events_posted": posted, "engine_sas": sas}


if __name__ == "__main__":
    from support.dpdk_loop_job import job_main

    sys.exit(job_main(run_job))
