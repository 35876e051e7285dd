"""``ipsecgw bench dpdk`` in gateway mode: the gateway worker itself, with control attached and live.

What is measured is what ``ipsecgw run`` with ``io: dpdk`` runs, minus the kernel interfaces:

- a control process (the command the caller passes: ``ipsecgw bench dpdk`` runs
  control/bench_dpdk_control.py) creates the shared-memory region with ``control.shm`` (the SPD and one
  AES-128-GCM tunnel CHILD SA) and keeps changing another SA every 100 ms while we measure;
- this process attaches to the region as the fastpath does, starts EAL on one core, and runs the
  ``GatewayWorker`` (cdefs/dpdk/dpdk_gw.c): net_pcap replays pre-built frames (``infinite_rx=1``) on the clear
  port (``out``: per-packet frame checks, SPD lookup in the region, MTU check, sequence reservation,
  ESP) or on the protected port (``in``: ESP to a local address, SPI lookup, decrypt), the other port is
  net_null; the SA is placed like every SA of the gateway (``PlacedEngine``), pinned to the rung asked for;
- between 2 ms slices Python does what fastpath/dpdk/daemon.py does: ``sync_region`` (control's changes:
  placement and a session made or freed), retries, and every 100 ms ``publish`` (counters to the region).

The rate is frames sent over wall-clock time, Python's share included.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastpath.bench.dpdk import DpdkBenchResult, bench_sa, crypto_rung, esp_frames, plaintext_frames, write_pcap

PCAP_MAC = bytes.fromhex("027063617000")   # DPDK 22.11's net_pcap: 02:70:63:61:70 + port id (checked below)
PEER_MAC = bytes.fromhex("020000000002")
LOCAL_OUT, LOCAL_IN = "172.16.1.5", "172.16.2.5"     # our outer address for out / in (bench_sa)
PUBLISH_EVERY = 0.1
HOLD_TIMEOUT = 3.0


def _prefer(engine: str) -> str:
    vdev, rung = crypto_rung(engine)
    return "software:ipsec-mb-core" if vdev is None else f"{rung}:{vdev}"


def _control(command: Sequence[str], path: str, direction: str) -> subprocess.Popen:
    ctl = subprocess.Popen([*command, path, direction],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    assert ctl.stdout is not None
    line = ctl.stdout.readline().strip()
    if line != "ready":
        ctl.kill()
        raise RuntimeError(f"the benchmark's control process did not start (exit {ctl.wait()})")
    return ctl


def _stop_control(ctl: subprocess.Popen) -> dict[str, Any]:
    try:
        out, _ = ctl.communicate(input="", timeout=10)      # stdin closed: it stops and reports
    except subprocess.TimeoutExpired:
        ctl.kill()
        out, _ = ctl.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


class _Driver:
    """The fastpath daemon's loop (fastpath/dpdk/daemon.py ``run``) without its kernel-interface chores."""

    def __init__(self, worker: Any, region: Any, slice_s: float):
        from fastpath.region_sync import sync_region

        self.w, self.region, self.slice_s = worker, region, slice_s
        self._sync = lambda: sync_region(region, worker.engine, worker.set_sa)
        self.syncs_with_changes = 0
        self.next_publish = 0.0

    def sync(self) -> None:
        r = self._sync()
        if r.installed or r.removed or r.spd_changed:
            self.syncs_with_changes += 1
            self.w.retry()

    def run(self, seconds: float) -> float:
        w = self.w
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end:
            if w.run(min(self.slice_s, end - now)):
                self.sync()
                w.retry()
            else:
                self.sync()
            if now >= self.next_publish:
                self.region.publish(w.engine)
                w.retry()
                w.expire(HOLD_TIMEOUT)
                self.next_publish = now + PUBLISH_EVERY
        return time.monotonic() - start


def run_gateway(size: int, direction: str, engine: str = "crypto_aesni_gcm0", seconds: float = 5.0,
                warmup: float = 1.0, burst: int = 32, slice_ms: int = 2, lcore: int = 0, *,
                control: Sequence[str]) -> DpdkBenchResult:
    """Measure the gateway worker in this process (EAL starts here: once per process).  ``control`` is the
    command of the control process, run with REGION DIRECTION appended: it is control's code, which the
    fastpath may start but not import."""
    from fastpath.dpdk import eal
    from fastpath.dpdk.gw import GatewayWorker
    from fastpath.engines.base import EngineError
    from fastpath.shm import FastpathRegion

    vdev, _ = crypto_rung(engine)
    if direction not in ("out", "in"):
        raise ValueError(f"direction: expected out or in, got {direction!r}")
    frames = plaintext_frames(size)
    if direction == "in":
        frames = esp_frames(frames, bench_sa("in"))
    frames = [PCAP_MAC + f[6:] for f in frames]          # unicast to the port the frames arrive on
    shm = f"/dev/shm/ipsecgw-bench-{os.getpid()}.shm"
    prefix = f"ipsecgw-bench-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="ipsecgw-bench-dpdk-")
    ctl = None
    try:
        pcap = Path(tmp) / "rx.pcap"
        write_pcap(pcap, frames)
        ctl = _control(control, shm, direction)
        region = FastpathRegion.attach(shm)
        vdevs = [f"net_pcap0,rx_pcap={pcap},infinite_rx=1", "net_null0,no-rx=1"] + ([vdev] if vdev else [])
        eal.init(eal.eal_args(vdevs, memory_mb=1024, lcores=str(lcore), file_prefix=prefix))
        clear, prot = ("net_pcap0", "net_null0") if direction == "out" else ("net_null0", "net_pcap0")
        w = GatewayWorker(region, clear, prot, burst=burst, outer_mtu=1500, idle_sleep_us=0, prefer=_prefer(engine))
        try:
            rx_mac = w.clear_mac if direction == "out" else w.prot_mac
            if rx_mac != PCAP_MAC:
                raise EngineError(f"net_pcap0 has MAC {rx_mac.hex(':')}, the frames were made for "
                                  f"{PCAP_MAC.hex(':')}")
            for a in (LOCAL_OUT, LOCAL_IN):
                w.add_local(ipaddress.ip_address(a))
            if direction == "out":
                w.set_neighbour(ipaddress.ip_address(LOCAL_IN), PEER_MAC)
            else:                                          # the inner destinations plaintext_frames uses
                for i in range(1, 251):
                    w.set_neighbour(ipaddress.ip_address(f"192.168.105.{i}"), PEER_MAC)
            drv = _Driver(w, region, slice_ms / 1000)
            drv.sync()
            placed = next((p for p in w.engine.placements().values() if p["spi"] == bench_sa(direction).spi), None)
            if placed is None or placed["engine"] != _prefer(engine):
                why = "; ".join(f"{s['engine']}: {s['reason']}" for s in (placed or {}).get("skipped", [])
                                if s["engine"] == _prefer(engine))
                raise EngineError(f"the SA is on {placed and placed['engine']}, not {_prefer(engine)}"
                                  + (f" ({why})" if why else ""))
            drv.run(warmup)
            before, syncs0 = w.stats(), drv.syncs_with_changes
            el = drv.run(seconds)
            after = w.stats()
            control_alive = ctl.poll() is None
        finally:
            w.close()
            region.close()
    finally:
        ctl_out = _stop_control(ctl) if ctl is not None else {}
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
        if os.path.exists(shm):
            os.unlink(shm)
    txk, rxk = ("tx_prot", "rx_clear") if direction == "out" else ("tx_clear", "rx_prot")
    tx, rx = after[txk] - before[txk], after[rxk] - before[rxk]
    drops = {k: after.get(k, 0) - before.get(k, 0) for k in ("no_policy", "discard", "kernel", "malformed",
                                                               "no_neigh", "tx_full", "hold_dropped", "esp_drop",
                                                               "too_big")}
    mpps = tx / el / 1e6
    return DpdkBenchResult(engine=engine, size=size, direction=direction, mpps=round(mpps, 4),
                           gbps=round(mpps * size * 8 / 1000, 3), rx_mpps=round(rx / el / 1e6, 4),
                           seconds=round(el, 3), packets=tx, drops={k: v for k, v in drops.items() if v},
                           burst=burst, mode="gateway", placement=placed["engine"],
                           sa_syncs=drv.syncs_with_changes - syncs0,
                           control_sa_changes=int(ctl_out.get("sa_changes", 0)), control_alive=control_alive)
