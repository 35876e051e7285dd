"""The steady load of the soak: pings from host A to host B (support.netns_tools' pinger, run in back-to-back
chunks) and iperf3 UDP at a bounded rate, both on threads, every result stamped on CLOCK_MONOTONIC so the
verdict can tell which losses fall in an abuse window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from support.netns_tools import TOOLS, Topology


@dataclass
class PingLog:
    """Every echo request sent: its send time and whether it was answered."""

    sent: list[float] = field(default_factory=list)
    answered: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PingStream(threading.Thread):
    """Pings at ``interval`` from host A until ``stop`` is set, in chunks of ``chunk`` seconds (the pinger
    reports at the end of a chunk; a chunk's last request still gets its 1 s to be answered)."""

    def __init__(self, net: Topology, stop: threading.Event, interval: float = 0.2, chunk: float = 20.0,
                 dst: str = "10.2.0.2"):
        super().__init__(name="soak-ping", daemon=True)
        self.net, self.stop_ev, self.interval, self.dst = net, stop, interval, dst
        self.count = max(1, int(chunk / interval))
        self.log = PingLog()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            r = subprocess.run(["ip", "netns", "exec", self.net.hA, sys.executable, TOOLS, "ping", self.dst,
                                str(self.count), str(self.interval)], capture_output=True, text=True,
                               timeout=self.count * self.interval + 30)
            if r.returncode != 0:
                self.log.errors.append(r.stderr[-500:])
                time.sleep(1)
                continue
            out = json.loads(r.stdout)
            got = set(out["got"])
            for seq, t in sorted((int(k), v) for k, v in out["sent"].items()):
                self.log.sent.append(out["t0"] + t)
                self.log.answered.append(seq in got)


@dataclass
class UdpInterval:
    start: float            # CLOCK_MONOTONIC, approximately (the client's start plus the server's offset)
    end: float
    packets: int
    lost: int


class UdpLoad(threading.Thread):
    """iperf3 UDP from host A to host B at ``rate`` in runs of ``chunk`` seconds until ``stop`` is set; the
    server's per-second counts (lost datagrams, by sequence number) are kept."""

    def __init__(self, net: Topology, stop: threading.Event, rate: str = "10M", chunk: int = 20,
                 dst: str = "10.2.0.2", length: int = 1200):
        super().__init__(name="soak-iperf3", daemon=True)
        self.net, self.stop_ev, self.rate, self.chunk, self.dst, self.length = net, stop, rate, chunk, dst, length
        self.intervals: list[UdpInterval] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            r = subprocess.run(["ip", "netns", "exec", self.net.hA, "iperf3", "--json", "-c", self.dst, "-u", "-b",
                                self.rate, "-l", str(self.length), "-t", str(self.chunk), "--get-server-output"],
                               capture_output=True, text=True, timeout=self.chunk + 30)
            try:
                out = json.loads(r.stdout)
                got = self._server_seconds(t0, out.get("server_output_text") or "")
                if not got:     # no per-second lines from the server: the run's totals as one interval
                    s = out["end"]["sum"]
                    got = [UdpInterval(t0, time.monotonic(), int(s["packets"]), int(s["lost_packets"]))]
                self.intervals.extend(got)
            except (ValueError, KeyError, TypeError):
                self.errors.append((r.stdout[-300:] + r.stderr[-300:]).strip() or f"exit {r.returncode}")
                time.sleep(1)

    # a server's per-second line: "[  5]   3.00-4.00   sec  1.19 MBytes  10.0 Mbits/sec  0.08 ms  0/1042 (0%)"
    SECOND = re.compile(r"\]\s+([\d.]+)-([\d.]+)\s+sec\s.*?\s(\d+)/(\d+)\s+\(")

    def _server_seconds(self, t0: float, text: str) -> list[UdpInterval]:
        """The server's per-second counts (its own shared support.gateway_harness.Iperf3Server runs without
        --json, so they come as text); the summary line (marked receiver) is left out."""
        out = []
        for line in text.splitlines():
            m = self.SECOND.search(line)
            if m and "receiver" not in line and "sender" not in line:
                a, b, lost, total = float(m[1]), float(m[2]), int(m[3]), int(m[4])
                out.append(UdpInterval(t0 + a, t0 + b, total, lost))
        return out
