"""Run the DPDK worker loop once from a JSON job: ``python -m support.dpdk_loop_job < job.json``.

EAL starts once per process and cannot restart, so tests and short-lived
commands run each loop in a fresh child through this module.  The job names
the vdevs, the rx/tx ports, the direction, the SAs (keys in hex) and the
limits; the result (one JSON line on stdout) carries the loop counters and
each SA's counters.  No key material is printed.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable
from typing import Any

from cdefs.sa import SA


def sa_from_json(d: dict[str, Any]) -> SA:
    return SA(spi=int(d["spi"]), src=ipaddress.ip_address(d["src"]), dst=ipaddress.ip_address(d["dst"]),
              enc=d["enc"], enc_key=bytes.fromhex(d["enc_key"]), integ=d.get("integ"),
              integ_key=bytes.fromhex(d.get("integ_key", "")), seq=int(d.get("seq", 1)), esn=bool(d.get("esn")),
              replay_window=int(d.get("replay_window", 64)))


def sa_to_json(sa: SA) -> dict[str, Any]:
    return {"spi": sa.spi, "src": str(sa.src), "dst": str(sa.dst), "enc": sa.enc, "enc_key": sa.enc_key.hex(),
            "integ": sa.integ, "integ_key": sa.integ_key.hex(), "seq": sa.seq, "esn": sa.esn,
            "replay_window": sa.replay_window}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Start EAL (this process must not have it yet), run the loop as the job says, close everything."""
    from fastpath.dpdk import eal
    from fastpath.dpdk.loop import DpdkLoop

    eal.init(eal.eal_args(job["vdevs"], memory_mb=int(job.get("memory_mb", 512)), lcores=job.get("lcores", "0")))
    with DpdkLoop(job["rx"], job["tx"], job["direction"], burst=int(job.get("burst", 32))) as loop:
        for i, (sa, direction) in enumerate(job["sas"]):
            loop.add_sa(i, sa_from_json(sa), direction)
        got = loop.run(packets=int(job.get("packets", 0)), seconds=float(job.get("seconds", 0)))
        st = loop.stats()
        sas = []
        for i in range(len(job["sas"])):
            s = loop.engine.stats(i)
            sas.append({"packets": s.packets, "bytes": s.bytes, "seq": s.seq, "flags": int(s.flags),
                        "drops": {d.name: n for d, n in s.drops.items()}})
        engine_drops = {d.name: n for d, n in loop.engine.engine_drops().items()}
    return {"received": got, "rx": st.rx, "tx": st.tx, "tx_full": st.tx_full, "not_ip": st.not_ip,
            "bursts": st.bursts, "polls": st.polls, "seconds": st.seconds,
            "drops": {d.name: n for d, n in st.drops.items()}, "sas": sas, "engine_drops": engine_drops}


def job_main(run: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """A job module's entry point (this one's and tests/support/dpdk_gw_job.py's): the job from stdin, the result
    of run(job) as one JSON line on stdout."""
    print(json.dumps(run(json.load(sys.stdin))))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(job_main(run_job))
