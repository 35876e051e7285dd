"""How long traffic stops when gateway A's fastpath is killed with kill -9 (docs/fastpath.md, "How long a
restart takes").  Not a pytest suite: run it by hand, as root.

    .venv/bin/python bench/restart_latency.py supervised 5   # under `ipsecgw run` (warm standby promoted)
    .venv/bin/python bench/restart_latency.py direct 5       # `ipsecgw fastpath` started again, as the e2e test does
    .venv/bin/python bench/restart_latency.py direct 5 --root /path/to/other/tree   # compare another checkout

The end-to-end test's topology (hostA - gwA === gwB - hostB, plain ESP, AES-GCM).  Host A pings host B
every 5 ms; each round kills gateway A's fastpath 0.8 s into a 4 s stream.  Prints one JSON line: per
kill, the longest run of pings that got no answer, in seconds, and the load average (the figures follow
the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERVAL = 0.005


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("direct", "supervised"))
    ap.add_argument("kills", type=int, nargs="?", default=5)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="the tree to run")
    args = ap.parse_args()
    root = args.root
    sys.path[:0] = [f"{root}/tests", root]
    from support.daemon_harness import DaemonProc
    from support.netns_tools import TOOLS, FastpathProc, Topology, gateway_config
    from support.outage import longest_outage

    tmp = Path(tempfile.mkdtemp(prefix="ipsg-restart-"))

    def cli(ns: str, *a: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "control.cli", *a]
        if kw.pop("popen", False):
            return subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True)

    def fastpath_pid(ns: str, sock: Path) -> int | None:
        r = cli(ns, "status", "--json", "--socket", str(sock))
        try:
            return json.loads(r.stdout)["processes"]["fastpath"].get("pid")
        except (ValueError, KeyError):
            return None

    with Topology(f"rl{os.getpid() % 1000}") as net:
        cfg_a, sock_a, shm_a = gateway_config(tmp, "A", encap=False, log_level="info")
        cfg_b, sock_b, shm_b = gateway_config(tmp, "B", encap=False, log_level="info")
        procs: list[DaemonProc | FastpathProc] = []     # the direct mode's processes, stopped by their harness
        runs: list[subprocess.Popen] = []                # the supervised mode's `ipsecgw run`s, stopped by SIGTERM
        try:
            if args.mode == "direct":
                procs += [DaemonProc(cfg_a, sock_a, shm_a, netns=net.gA),
                          DaemonProc(cfg_b, sock_b, shm_b, netns=net.gB)]
                fp_a = FastpathProc(net.gA, cfg_a, tmp / "fpA.log")
                procs += [fp_a, FastpathProc(net.gB, cfg_b, tmp / "fpB.log")]
            else:
                runs += [cli(g, "run", "-c", str(c), "--log-file", str(tmp / f"{g}.log"), popen=True)
                         for g, c in ((net.gA, cfg_a), (net.gB, cfg_b))]
                deadline = time.monotonic() + 60
                while fastpath_pid(net.gA, sock_a) is None or fastpath_pid(net.gB, sock_b) is None:
                    if time.monotonic() > deadline:
                        raise SystemExit("the gateways did not come up")
                    time.sleep(0.2)
            for _ in range(20):
                if net.ping(2, 0.2)["got"]:
                    break
            time.sleep(4)                      # under ipsecgw run: the standby is ready 2 s after a start
            gaps = []
            for _ in range(args.kills):
                pinger = subprocess.Popen(["ip", "netns", "exec", net.hA, sys.executable, TOOLS, "ping", "10.2.0.2",
                                           str(int(4.0 / INTERVAL)), str(INTERVAL)], stdout=subprocess.PIPE, text=True)
                time.sleep(0.8)
                if args.mode == "direct":
                    fp_a.stop(signal.SIGKILL)
                    fp_a = FastpathProc(net.gA, cfg_a, tmp / "fpA.log")
                    procs.append(fp_a)
                else:
                    os.kill(fastpath_pid(net.gA, sock_a), signal.SIGKILL)
                out, _ = pinger.communicate(timeout=60)
                ping = json.loads(out)
                gaps.append(round(longest_outage(ping["sent"], ping["got"], INTERVAL), 3))
                time.sleep(4)
            print(json.dumps({"mode": args.mode, "root": root, "gaps_s": gaps,
                              "mean_s": round(sum(gaps) / len(gaps), 3), "max_s": max(gaps),
                              "load": [round(x, 1) for x in os.getloadavg()]}))
        finally:
            for p in reversed(procs):
                p.stop()
            for r in reversed(runs):
                r.send_signal(signal.SIGTERM)
                try:
                    r.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    r.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
