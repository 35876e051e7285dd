"""IKE SA + first CHILD SA set-ups per second: our responder and strongSwan's, driven by our initiator.

Two namespaces joined by a veth pair (tests/support/strongswan.NetnsPair).  The load generator
(bench/ike_loadgen.py: our initiator, ``CONCURRENCY`` IKE SAs in flight from distinct ports and
identities, PSK, aes128gcm16-prfsha256-x25519, ESP aes128gcm16) runs in namespace a pinned to CPU 0;
the responder runs in namespace b pinned to CPU 1:
  - ours: ``IkeUdpEndpoint`` over the sans-IO core (``loadgen respond``), COOKIE threshold and
    half-open bound raised out of the way;
  - strongSwan: charon-systemd (kernel-libipsec, no policies/routes installed) with DoS protection
    off, cookie/block thresholds raised and a hashed IKE SA table.
Only IKE_AUTH exchanges that set up the CHILD SA count; each IKE SA is deleted right after, so state
stays bounded on both ends.  Besides wall-clock set-ups/s, the generator reads the responder's CPU
time over the window: set-ups per responder CPU-second is its capacity on one core even when the
generator is the limit (and, unlike wall-clock rates, it does not reward charon's 16 threads for
winning more time slices on a busy host).  The generator's own set-ups per CPU-second is our
initiator's rate on one core.  Both responders stay up and ROUNDS short rounds alternate between
them; extra_info has every round, the best of each side, ours / strongSwan's ratios (best against
best, and per pair of neighbouring rounds with their median).
Skipped, with the reason, without root, taskset, 2 CPUs or charon.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.strongswan import PLUGINS, Charon, NetnsPair
from support.strongswan import unavailable_reason as swan_unavailable

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "ike_loadgen.py"        # run by path: bench/ is not a package
SECONDS = float(os.environ.get("IKE_BENCH_SECONDS", "2.5"))
WARMUP = 0.7
# alternating ours / strongSwan: the host is shared, so the best of each counts
ROUNDS = int(os.environ.get("IKE_BENCH_ROUNDS", "3"))
CONCURRENCY = 64
PSK = "bench-ike-setup-psk-0123456789"
IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
A_IP, B_IP = "192.0.2.1", "192.0.2.2"
GEN_CPU, RESP_CPU = "0", "1"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("taskset") is None:
        return "taskset missing (util-linux)"
    if (os.cpu_count() or 1) < 2:
        return "needs 2 CPUs (generator and responder on one core each)"
    why = swan_unavailable()
    return f"strongSwan as the reference responder: {why}" if why else None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _loadgen(ns: str, cpu: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, "taskset", "-c", cpu, sys.executable, str(LOADGEN), *args]


def generate(ns: str, remote: str, watch_pid: int) -> dict:
    r = subprocess.run(_loadgen(ns, GEN_CPU, "initiate", "--local", A_IP, "--remote", remote, "--psk", PSK,
                                "--ike", IKE, "--esp", ESP, "--concurrency", str(CONCURRENCY), "--warmup",
                                str(WARMUP), "--seconds", str(SECONDS), "--watch-pid", str(watch_pid)),
                       capture_output=True, text=True, timeout=SECONDS + WARMUP + 20, cwd=ROOT, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


class BenchCharon(Charon):
    """The interop harness's charon with settings for a set-up benchmark: quiet logs, no DoS
    throttling (the generator is one address with many half-open SAs), a hashed IKE SA table."""

    def __init__(self, ns: str, conf: str):
        super().__init__(ns, conf)
        (self.dir / "strongswan.conf").write_text(f"""charon-systemd {{
    journal {{
        default = -1
    }}
}}
charon {{
    load_modular = no
    load = {PLUGINS}
    install_routes = no
    install_virtual_ip = no
    dos_protection = no
    cookie_threshold = 1000000
    block_threshold = 1000000
    init_limit_half_open = 0
    ikesa_table_size = 4096
    ikesa_table_segments = 16
    filelog {{
        main {{
            path = {self.log}
            default = 0
            flush_line = no
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{self.vici}
        }}
    }}
}}
""")

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        subprocess.run(["taskset", "-a", "-p", "-c", RESP_CPU, str(self.proc.pid)], check=True,
                       capture_output=True)


def _charon_conf() -> str:
    return f"""connections {{
    bench {{
        version = 2
        local_addrs = {B_IP}
        remote_addrs = %any
        proposals = {IKE}
        mobike = no
        local {{
            auth = psk
            id = responder.bench
        }}
        remote {{
            auth = psk
            id = %any
        }}
        children {{
            net {{
                mode = tunnel
                local_ts = 10.2.0.0/16
                remote_ts = 10.1.0.0/16
                esp_proposals = {ESP}
                policies = no
                start_action = none
            }}
        }}
    }}
}}
secrets {{
    ike-any {{
        secret = "{PSK}"
    }}
}}
"""


def _log_kinds(lines: list[str], most: int = 8) -> list[str]:
    """One line of each kind a responder logged (numbers, SPIs and time stamps taken out)."""
    kinds: dict[str, str] = {}
    for ln in lines:
        key = re.sub(r"[0-9a-f]{6,}|\d+", "#", ln.split("] ", 1)[-1].split(" INFO ", 1)[-1])
        kinds.setdefault(key, ln)
        if len(kinds) >= most:
            break
    return list(kinds.values())


def _summary(runs: list[dict]) -> dict:
    best = max(runs, key=lambda r: r["rate"])
    per_cpu = [r["responder_per_cpu_s"] for r in runs if r.get("responder_per_cpu_s")]
    gen = [r["initiator_per_cpu_s"] for r in runs if r.get("initiator_per_cpu_s")]
    return {"rate": round(best["rate"], 1), "rates": [round(r["rate"], 1) for r in runs],
            "responder_per_cpu_s": round(max(per_cpu), 1) if per_cpu else None,
            "initiator_per_cpu_s": round(max(gen), 1) if gen else None,
            "responder_util": round(best.get("responder_util", 0.0), 2),
            "mean_latency_ms": round(best["mean_latency_ms"] or 0.0, 1),
            "failed": sum(r["failed"] for r in runs), "left_in_flight": sum(r["left_in_flight"] for r in runs)}


def test_ike_setup_rate(benchmark) -> None:
    """Ours and charon as responders on CPU 1, the same generator on CPU 0, rounds alternating."""
    runs: dict[str, list[dict]] = {"ours": [], "strongswan": []}
    tail: dict = {}
    with contextlib.ExitStack() as stack:
        ours_net = stack.enter_context(NetnsPair("isr"))
        # our responder logs what the daemon logs per IKE SA (up, CHILD SA up, deleted) to a file, as
        # charon writes its level-0 lines to its filelog: neither gets its logging for free
        ours_log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ike-bench-"))) / "responder.log"
        resp = subprocess.Popen(_loadgen(ours_net.b, RESP_CPU, "respond", "--local", B_IP, "--psk", PSK, "--ike",
                                         IKE, "--esp", ESP, "--log", str(ours_log)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
        try:
            assert resp.stdout is not None
            assert resp.stdout.readline().strip() == "ready", resp.stderr.read() if resp.stderr else ""
            swan_net = stack.enter_context(NetnsPair("iss"))
            charon = stack.enter_context(BenchCharon(swan_net.b, _charon_conf()))
            assert charon.proc is not None

            def measure() -> None:
                for _ in range(ROUNDS):
                    # `ip netns exec` and taskset exec in place: these pids are the responders themselves
                    runs["ours"].append(generate(ours_net.a, B_IP, resp.pid))
                    runs["strongswan"].append(generate(swan_net.a, B_IP, charon.proc.pid))

            benchmark.pedantic(measure, rounds=1, iterations=1)
            tail["strongswan_sas_left"] = charon.swanctl("--list-sas").count("ESTABLISHED")
            # what each responder wrote to its log per set-up (both log at their default/info level)
            lines = charon.log.read_text(errors="replace").splitlines() if charon.log.exists() else []
            tail["strongswan_log_lines"] = len(lines)
            total = sum(r.get("setups_total", 0) for r in runs["strongswan"])
            tail["strongswan_log_lines_per_setup"] = round(len(lines) / total, 2) if total else None
            tail["strongswan_log_kinds"] = _log_kinds(lines)
        finally:
            resp.terminate()
            out, _ = resp.communicate(timeout=10)
        ours_lines = ours_log.read_text(errors="replace").splitlines() if ours_log.exists() else []
    end = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    ours_total = sum(r.get("setups_total", 0) for r in runs["ours"])
    tail.update(ours_log_lines=len(ours_lines), ours_log_kinds=_log_kinds(ours_lines),
                ours_log_lines_per_setup=round(len(ours_lines) / ours_total, 2) if ours_total else None)
    tail.update(ours_sas_left=end.get("sas_left"), ours_gate=end.get("gate"))
    info = benchmark.extra_info
    info.update(concurrency=CONCURRENCY, seconds_per_round=SECONDS, rounds=ROUNDS, proposals=f"{IKE} / {ESP}", **tail)
    for name, rs in runs.items():
        assert rs and all(r["setups"] > 0 for r in rs), rs
        info.update({f"{name}_{k}": v for k, v in _summary(rs).items()})
    info["setups_per_s"] = info["ours_rate"]
    info["ratio_ours_over_strongswan"] = round(info["ours_rate"] / info["strongswan_rate"], 3)
    if info["ours_responder_per_cpu_s"] and info["strongswan_responder_per_cpu_s"]:
        info["ratio_per_cpu_s_ours_over_strongswan"] = round(
            info["ours_responder_per_cpu_s"] / info["strongswan_responder_per_cpu_s"], 3)
    # each round of ours is paired with the strongSwan round right after it: on a shared host the paired
    # ratios and their median say more than best against best, which may come from different moments
    paired = [o["responder_per_cpu_s"] / s["responder_per_cpu_s"]
              for o, s in zip(runs["ours"], runs["strongswan"], strict=True)
              if o.get("responder_per_cpu_s") and s.get("responder_per_cpu_s")]
    info["ratio_per_cpu_s_rounds"] = [round(r, 3) for r in paired]
    info["ratio_per_cpu_s_median"] = round(statistics.median(paired), 3) if paired else None
    wall = [o["rate"] / s["rate"] for o, s in zip(runs["ours"], runs["strongswan"], strict=True) if s["rate"]]
    info["ratio_wall_rounds"] = [round(r, 3) for r in wall]
