"""``ipsecgw run`` (supervisor + control + fastpath) as a process in a network namespace, for the gateway
end-to-end tests and the demo test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class GatewayProc:
    """``ipsecgw run -c CONFIG`` in namespace ``ns``; the log (all three processes) goes to ``log``."""

    def __init__(self, ns: str, config: Path, sock: Path, log: Path, *, wait: bool = True):
        self.ns, self.config, self.sock, self.log = ns, config, sock, log
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "control.cli", "run", "-c",
                                      str(config), "--log-file", str(log)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ipsecgw run exited {self.proc.returncode}:\n{self.text()}")
            if "fastpath up" in self.text() and self.sock.exists():
                try:
                    self.cli("status", "--json")
                    return
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not come up:\n{self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, timeout: float = 30) -> str:
        r = subprocess.run([sys.executable, "-m", "control.cli", *args, "--socket", str(self.sock)], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"ipsecgw {' '.join(args)}: {r.stderr}")
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def pids(self) -> dict[str, int | None]:
        return {n: p.get("pid") for n, p in self.json("status")["processes"].items()}

    def child(self, name: str = "net") -> dict[str, Any] | None:
        """The installed CHILD SA called ``name`` (list-sas JSON), or None."""
        for ike in self.json("list-sas"):
            for c in ike.get("children", []):
                if c["name"] == name and c["state"] == "INSTALLED" and ike.get("state") == "ESTABLISHED":
                    return c
        return None

    def wait_child(self, name: str = "net", timeout: float = 20, other_than: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = self.child(name)
            except RuntimeError:
                c = None
            if c is not None and c["spi_in"] != other_than:
                return c
            if time.monotonic() > deadline:
                raise AssertionError(f"no CHILD SA {name} within {timeout} s:\n{self.text()[-4000:]}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def iperf3(ns: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    r = subprocess.run(["ip", "netns", "exec", ns, "iperf3", "--json", *args], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"iperf3 {' '.join(args)} failed: {r.stdout[-2000:]}{r.stderr}")
    return json.loads(r.stdout)


class Iperf3Server:
    def __init__(self, ns: str, bind: str, port: int = 5201):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s", "-B", bind, "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def acquire_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r"ACQUIRE for", line)]
