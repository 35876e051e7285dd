"""``make soak``: an ipsecgw gateway pair (``ipsecgw run`` in the namespaces of support.netns_tools.Topology,
kernel I/O) under pings and iperf3 UDP for ``--minutes``, with CHILD SA rekeys every few seconds, DPD, IKE
rekeys and reauthentications, and abuse windows (garbage and IKE_SA_INIT floods) every ``--abuse-every``
seconds; sampled every ``--sample-every`` seconds, judged by soak/verdict.py, written as JSON, a text table
and an SVG to ``--out``.  Exit status 1 when the verdict is FAILED.  Run as root, under the e2e lock."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.gateway_harness import GatewayProc, Iperf3Server  # noqa: E402
from support.netns_tools import Topology, connection_yaml, gateway_config  # noqa: E402

from soak.abuse import Side, Window, abuse_window  # noqa: E402
from soak.probes import gateway_sample  # noqa: E402
from soak.report import minute_table, plot, result_of  # noqa: E402
from soak.traffic import PingStream, UdpLoad  # noqa: E402
from soak.verdict import STEADY, failures, verdict_line  # noqa: E402

# spoofed sources (support.flood) live in 198.18.0.0/15; each gateway routes them out of a veth pair of its
# own to a made-up MAC, so the COOKIE replies leave and vanish (the other end drops them: not its address)
# instead of failing with "network unreachable" or looping between the gateways (this kernel has no dummy)
SPOOFED_NET, DROP_HOP = "198.18.0.0/15", "169.254.99.2"


def soak_config(tmp: Path, side: str, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """gateway_config's YAML with the soak's timers: DPD both ends; A rekeys its CHILD SA every
    ``--child-rekey`` s and reauthenticates every ``--reauth`` s; B rekeys the CHILD SA a little later (so
    A's timer usually wins, and now and then both start: a collision) and the IKE SA every ``--ike-rekey`` s."""
    cfg, sock, shm = gateway_config(tmp, side, encap=False, log_level="info")
    text = cfg.read_text()
    conn = f"    dpd_delay: {args.dpd}s\n"
    conn += f"    reauth_time: {args.reauth}s\n" if side == "A" else f"    rekey_time: {args.ike_rekey}s\n"
    child_rekey = int(args.child_rekey) if side == "A" else int(args.child_rekey) + max(1, int(args.child_rekey) // 8)
    text = text.replace("    proposals: [aes128gcm16-prfsha256-x25519]\n",
                        "    proposals: [aes128gcm16-prfsha256-x25519]\n" + conn, 1)
    text = text.replace("        start_action: trap\n",
                        f"        start_action: trap\n        rekey_time: {child_rekey}s\n", 1)
    # a responder-only connection for %any beside the site-to-site one, as a gateway that also takes road
    # warriors has: the spoofed IKE_SA_INIT floods then reach the responder gate (cookies, half-open
    # limits) instead of stopping at "no connection"
    lts = "10.1.0.0/24" if side == "A" else "10.2.0.0/24"
    rw = connection_yaml("roadwarriors", "rw", local="192.0.2.1" if side == "A" else "192.0.2.2", remote="'%any'",
                         local_id=f"gw-{side.lower()}.example", remote_id="rw.example", local_ts=lts,
                         remote_ts="10.99.0.0/24").replace("start_action: trap", "start_action: none")
    cfg.write_text(text.replace("secrets:", rw + "secrets:", 1))
    return cfg, sock, shm


def drain(gw: GatewayProc, path: Path) -> None:
    """Copy the gateway's stderr (a pipe nobody else reads) to path, so 30 minutes of it cannot fill the pipe
    and stall the gateway."""
    def copy() -> None:
        with open(path, "wb") as f:
            for chunk in iter(lambda: gw.proc.stderr.read1(65536), b""):
                f.write(chunk)
    threading.Thread(target=copy, name="soak-stderr", daemon=True).start()


def log_events(text: str) -> dict[str, int]:
    return {"child_rekeys": len(re.findall(r"CHILD SA \S+ of \S+ rekeyed: SPIs", text)),
            "ike_rekeys": len(re.findall(r"IKE SA \S+ rekeyed: now", text)),
            "reauths": text.count("reauthenticated: it replaces"),
            "tracebacks": text.count("Traceback (most recent call last)")}


def wait_steady(socks: dict[str, tuple[Path, Path]], timeout: float) -> dict[str, dict]:
    """Samples of both gateways, taken until every SA count is at its steady value (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        last = {gw: gateway_sample(*p) for gw, p in socks.items()}
        if all("error" not in s and all(s[k] == v for k, v in STEADY.items()) for s in last.values()) \
                or time.monotonic() > deadline:
            return last
        time.sleep(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    ap.add_argument("--out", type=Path, default=None, help="where the JSON, table and SVG go (default: a new "
                    "directory /tmp/ipsecgw-soak-*)")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--abuse-every", type=float, default=60.0, help="seconds between abuse windows (default 60)")
    ap.add_argument("--ping-interval", type=float, default=0.2, help="seconds between pings (default 0.2)")
    ap.add_argument("--udp-rate", default="10M", help="iperf3 UDP rate (default 10M bit/s)")
    ap.add_argument("--flood-rate", type=int, default=2000, help="IKE_SA_INIT per second in a flood")
    ap.add_argument("--flood-seconds", type=float, default=2.0, help="length of a flood (default 2 s)")
    ap.add_argument("--garbage", type=int, default=200, help="packets of each garbage kind per window")
    ap.add_argument("--child-rekey", type=int, default=8, help="A's CHILD SA rekey_time, s (B's is an eighth more)")
    ap.add_argument("--ike-rekey", type=int, default=60, help="B's IKE SA rekey_time, s")
    ap.add_argument("--reauth", type=int, default=150, help="A's IKE SA reauth_time, s")
    ap.add_argument("--dpd", type=int, default=5, help="dpd_delay on both, s")
    ap.add_argument("--keep-logs", action="store_true", help="copy the gateway logs and configs to --out")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="ipsecgw-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    duration = args.minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="ipsecgw-soak-run-"))
    samples: dict[str, list[dict]] = {"A": [], "B": []}
    windows: list[Window] = []
    gws: dict[str, GatewayProc] = {}
    exits: dict[str, int] = {}
    try:
        with Topology(f"sk{os.getpid() % 100000}") as net:
            for ns in (net.gA, net.gB):
                for cmd in (["link", "add", "soakdrop", "type", "veth", "peer", "name", "soakdrop1"],
                            ["link", "set", "soakdrop", "up"], ["link", "set", "soakdrop1", "up"],
                            ["neigh", "add", DROP_HOP, "lladdr", "02:00:00:00:00:01", "dev", "soakdrop", "nud",
                             "permanent"],
                            ["route", "add", SPOOFED_NET, "via", DROP_HOP, "dev", "soakdrop", "onlink"]):
                    subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
            cfgs = {s: soak_config(tmp, s, args) for s in "AB"}
            for side, ns in (("A", net.gA), ("B", net.gB)):
                cfg, sock, _ = cfgs[side]
                gws[side] = GatewayProc(ns, cfg, sock, tmp / f"gw{side}.log")
                drain(gws[side], tmp / f"gw{side}.stderr")
            socks = {s: (cfgs[s][1], cfgs[s][2]) for s in "AB"}
            iperf = Iperf3Server(net.hB, "10.2.0.2")
            try:
                # the first ping raises the ACQUIRE; the load starts once the tunnel answers
                deadline = time.monotonic() + 30
                while not net.ping(3, 0.2)["got"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("no tunnel after 30 s:\n" + gws["A"].text()[-3000:])
                gws["A"].wait_child()
                stop = threading.Event()
                pings, udp = PingStream(net, stop, args.ping_interval), UdpLoad(net, stop, args.udp_rate)
                t_start = time.monotonic()
                pings.start()
                udp.start()
                sides = [Side("A", "192.0.2.1", net.gB, "192.0.2.2"), Side("B", "192.0.2.2", net.gA, "192.0.2.1")]
                abuse: threading.Thread | None = None
                next_sample, next_abuse = t_start, t_start + min(30.0, args.abuse_every / 2)
                print(f"soak: {args.minutes:g} min from now; samples every {args.sample_every:g} s, abuse every "
                      f"{args.abuse_every:g} s; output in {out}", flush=True)
                while (now := time.monotonic()) < t_start + duration:
                    if now >= next_abuse and (abuse is None or not abuse.is_alive()) and \
                            now + args.flood_seconds + 5 < t_start + duration:
                        side = sides[len(windows) % 2]
                        spi = samples[side.name][-1].get("spi_in") if samples[side.name] else None

                        def one(side: Side = side, spi: str | None = spi) -> None:
                            windows.append(abuse_window(side, int(spi, 16) if spi else None, garbage=args.garbage,
                                                        flood_rate=args.flood_rate,
                                                        flood_seconds=args.flood_seconds))
                        abuse = threading.Thread(target=one, name="soak-abuse", daemon=True)
                        abuse.start()
                        next_abuse += args.abuse_every
                    if now >= next_sample:
                        for s in "AB":
                            samples[s].append(gateway_sample(*socks[s]))
                        next_sample += args.sample_every
                        done = int(now - t_start)
                        if done and done % 60 < args.sample_every:
                            print(f"  {done // 60} min: {len(pings.log.sent)} pings, "
                                  f"{sum(not a for a in pings.log.answered)} unanswered", flush=True)
                    time.sleep(max(0.0, min(next_sample, next_abuse) - time.monotonic(), 0.05))
                stop.set()
                if abuse is not None:
                    abuse.join()
                while pings.is_alive() or udp.is_alive():       # each finishes its chunk, still sampled
                    if time.monotonic() >= next_sample:
                        for s in "AB":
                            samples[s].append(gateway_sample(*socks[s]))
                        next_sample += args.sample_every
                    time.sleep(0.2)
                for s, smp in wait_steady(socks, 30).items():
                    samples[s].append(smp)
                t_end = time.monotonic()
            finally:
                iperf.stop()
                for side in ("A", "B"):
                    if side in gws:
                        exits[side] = gws[side].stop()
        logs = {s: (tmp / f"gw{s}.log").read_text(errors="replace") for s in "AB"}
        if args.keep_logs:
            for f in tmp.iterdir():
                if f.suffix in (".log", ".yaml", ".stderr"):
                    shutil.copy(f, out / f.name)
    finally:
        for g in gws.values():
            g.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    events = log_events(logs["A"])
    events["tracebacks"] += log_events(logs["B"])["tracebacks"]
    result = result_of(args, samples, pings, udp, [w.as_dict() for w in windows], t_start, t_end, events, exits)
    bad = failures(result)
    if events["tracebacks"]:
        bad.append(f"{events['tracebacks']} traceback(s) in the gateway logs")
    if any(rc != 0 for rc in exits.values()):
        bad.append(f"gateway exit status {exits}")
    result["verdict"] = verdict_line(result, bad)
    result["failures"] = bad
    table = minute_table(result, samples, t_start)
    (out / "soak.json").write_text(json.dumps({**result, "samples": samples}, indent=1))
    (out / "soak.txt").write_text(table + "\n" + result["verdict"] + "\n")
    (out / "soak.svg").write_text(plot(result, samples, t_start))
    print(table)
    print(f"written: {out / 'soak.json'}, {out / 'soak.txt'}, {out / 'soak.svg'}")
    print(result["verdict"], flush=True)
    return 1 if bad else 0


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM's default ends the process without unwinding: the gateways, iperf3 and the namespaces would
    # outlive the soak.  As an exception, run()'s finally blocks and the Topology's exit take them down.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        print("soak: run as root (network namespaces, TUN devices, raw sockets)", file=sys.stderr)
        return 2
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
