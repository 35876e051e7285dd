"""``ipsecgw run`` (supervisor + control + fastpath) as a process in a network namespace, for the gateway
end-to-end tests and the demo test; a CHILD SA rekey under a ping stream (``ping_through_rekey``); strongSwan
as gateway B of the same topology (``charon_gateway_b``, ``gateway_a_with_charon``, ``first_ping``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.netns_tools import PSK, V6, Topology
from support.strongswan import Charon, swanctl_conf

ROOT = Path(__file__).resolve().parents[2]


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


def ping_through_rekey(t: Topology, gw: GatewayProc, before: dict[str, Any],
                       rekey: Callable[[], object] | None = None) -> dict[str, Any]:
    """200 pings at 20 ms from host A with gw's CHILD SA "net" rekeyed in the middle (by us, or by
    ``rekey()``, e.g. the peer): none may be lost, and both SPIs change.  The new CHILD SA."""
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(t.ping(200, 0.02)))
    th.start()
    time.sleep(1.0)
    if rekey is None:
        gw.cli("rekey", "net")
    else:
        rekey()
    new = gw.wait_child(other_than=before["spi_in"], timeout=15)
    th.join()
    assert len(out["got"]) == len(out["sent"]), f"lost: {sorted(set(out['sent']) - set(out['got']))}"
    assert new["spi_in"] != before["spi_in"] and new["spi_out"] != before["spi_out"]
    return new


def charon_gateway_b(t: Topology, *, ipv6: bool = False) -> Charon:
    """charon in gateway B's namespace as the peer of ``gateway_config(tmp, "A", ...)`` (PSK, AES-GCM-128);
    ipv6: over the IPv6 transit with both inner families (``outer="ipv6"``).  Not started."""
    if ipv6:
        local, remote = V6["gB"], V6["gA"]
        local_ts, remote_ts = "10.2.0.0/24,fd00:2::/64", "10.1.0.0/24,fd00:1::/64"
    else:
        local, remote, local_ts, remote_ts = "192.0.2.2", "192.0.2.1", "10.2.0.0/24", "10.1.0.0/24"
    return Charon(t.gB, swanctl_conf(local=local, remote=remote, local_id="gw-b.example", remote_id="gw-a.example",
                                     psk=PSK, ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16",
                                     local_ts=local_ts, remote_ts=remote_ts))


@contextmanager
def gateway_a_with_charon(t: Topology, config: Path, sock: Path, log: Path, charon: Charon) -> Iterator[GatewayProc]:
    """charon started, then our gateway A; on the way out ours is stopped first and must exit 0, then charon."""
    gw = None
    try:
        charon.start()
        gw = GatewayProc(t.gA, config, sock, log)
        yield gw
    finally:
        text = gw.text() if gw else ""
        if gw is not None:
            assert gw.stop() == 0, text[-3000:]
        charon.stop()


def first_ping(t: Topology, gw: GatewayProc, charon: Charon, wait: float = 0.1, retry_wait: float = 0.1) -> None:
    """Host A's first ping to host B, which raises the ACQUIRE: it must be answered, or the one after it
    (the held packet may time out while IKE moves to 4500 for charon's kernel-libipsec)."""
    first = t.ping(1, wait)
    if not first["got"]:
        first = t.ping(1, retry_wait)
    assert first["got"], gw.text()[-3000:] + charon.log_text()[-3000:]
