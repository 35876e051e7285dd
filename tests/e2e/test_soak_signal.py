"""``make soak`` stopped by SIGTERM (a CI timeout, ``kill``, systemd) takes its gateway pair and namespaces
down with it, as Ctrl-C does: the run's cleanup is exception-driven, and SIGTERM's default would skip it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

ROOT = Path(__file__).resolve().parents[2]


def namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].endswith(tag)]


def pids_in(ns: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_pair_and_removes_the_namespaces(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, str(ROOT / "tests/soak/run_soak.py"), "--minutes", "5",
                          "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=ROOT)
    tag = f"sk{p.pid % 100000}"
    left: set[int] = set()
    try:
        assert p.stdout is not None
        seen = []
        deadline = time.monotonic() + 90
        for line in p.stdout:              # the load has started once the soak says how long it runs
            seen.append(line)
            if line.startswith("soak: ") or time.monotonic() > deadline:
                break
        assert any(s.startswith("soak: ") for s in seen), "".join(seen)
        assert len(namespaces(tag)) == 4
        # the gateways (control and fastpath each) and iperf3's server live in the gateway and host namespaces
        gateways = pids_in(f"gA{tag}") | pids_in(f"gB{tag}")
        left = gateways | pids_in(f"hA{tag}") | pids_in(f"hB{tag}")
        assert len(gateways) >= 4 and pids_in(f"hB{tag}"), (gateways, "".join(seen))
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
        assert rc == 128 + signal.SIGTERM, "".join(seen) + p.stdout.read()
        assert namespaces(tag) == []
        assert [pid for pid in gateways if alive(pid)] == []
        left = set()                       # all gone: their numbers may belong to someone else soon
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid in left:                   # what a failed run would otherwise leave behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for ns in namespaces(tag):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
