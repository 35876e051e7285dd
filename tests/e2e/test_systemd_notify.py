"""``ipsecgw run`` speaks systemd's notify protocol to a socket of ours, as systemd would listen to it.

This machine cannot boot systemd as PID 1 for the test (a shared container: its cgroup hierarchy has no
name=systemd mount and no systemd-nspawn, and booting systemd on the shared root would run its sysinit
units against other users' files), so the test plays the service manager: it binds the unix datagram
socket, starts a real gateway (supervisor, control, fastpath) in a network namespace with NOTIFY_SOCKET and
WATCHDOG_USEC set and ``--log-format json``, and checks:

- READY=1 comes once, after the fastpath logged "fastpath up", and ``status`` then shows the fastpath alive;
- WATCHDOG=1 keeps coming, about every half of WATCHDOG_USEC; it stops while the fastpath is frozen
  (SIGSTOP: its heartbeat goes stale) and comes back after SIGCONT;
- ``ipsecgw reload`` and SIGHUP each give RELOADING=1 then READY=1;
- SIGTERM gives STOPPING=1 and the gateway exits 0;
- every log line of the three processes is JSON, and no worker sent a datagram (NotifyAccess=main).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from support.netns_tools import ROOT, Topology, gateway_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")]

TAG = f"sd{os.getpid() % 10000}"
WATCHDOG_USEC = 1_000_000           # a ping every 0.5 s


class Manager:
    """The service manager's end: every datagram with its wall-clock arrival time and the sender's pid."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._recv, daemon=True)
        self.thread.start()

    def _recv(self) -> None:
        size = struct.calcsize("3i")
        while not self.done:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next((struct.unpack("3i", d[:size])[0] for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), -1)
            with self.lock:
                self.got.append((time.time(), pid, data.decode()))

    def messages(self) -> list[tuple[float, int, str]]:
        with self.lock:
            return list(self.got)

    def wait(self, first_line: str, after: int = 0, timeout: float = 30.0) -> tuple[int, float, str]:
        """The index, arrival time and text of the first message from index ``after`` on whose first line
        is ``first_line``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (t, _, text) in enumerate(self.messages()[after:], after):
                if text.split("\n")[0] == first_line:
                    return i, t, text
            time.sleep(0.05)
        raise AssertionError(f"no {first_line} within {timeout} s: {self.messages()[after:]}")

    def close(self) -> None:
        self.done = True
        self.thread.join(timeout=2)
        self.sock.close()


def _cli(*args: str, sock: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "control.cli", *args, "--socket", str(sock)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _pings(m: Manager, since: float, until: float) -> int:
    return sum(1 for t, _, text in m.messages() if since <= t < until and text == "WATCHDOG=1")


def test_notify_protocol_of_a_running_gateway(tmp_path: Path) -> None:
    cfg, sock, _ = gateway_config(tmp_path, "A", encap=False, log_level="info")
    log = tmp_path / "gw.log"
    m = Manager(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC=str(WATCHDOG_USEC))
    env.pop("WATCHDOG_PID", None)
    proc = None
    try:
        with Topology(TAG) as topo:
            proc = subprocess.Popen(["ip", "netns", "exec", topo.gA, sys.executable, "-m", "control.cli", "run",
                                     "-c", str(cfg), "--log-file", str(log), "--log-format", "json"], cwd=ROOT,
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            i_ready, t_ready, ready = m.wait("READY=1", timeout=60)
            assert ready.startswith("READY=1\nSTATUS=running: 1 connection(s)"), ready
            st = json.loads(_cli("status", "--json", sock=sock))
            assert st["processes"]["fastpath"]["alive"], st["processes"]
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            up = [o for o in lines if o["event"].startswith("fastpath up")]
            assert len(up) == 1, [o["event"] for o in lines]
            up_at = datetime.fromisoformat(up[0]["ts"].replace("Z", "+00:00")).timestamp()
            assert up_at <= t_ready, (up[0]["ts"], t_ready)
            # before READY: nothing but STATUS lines (no early READY, no pings)
            assert all(text.startswith("STATUS=") for _, _, text in m.messages()[:i_ready])

            # the watchdog: about two pings a second
            time.sleep(3.0)
            n = _pings(m, t_ready, time.time())
            assert 3 <= n <= 8, m.messages()
            # a frozen fastpath: its heartbeat ages past 2 s and the pings stop, then resume
            fp_pid = st["processes"]["fastpath"]["pid"]
            os.kill(fp_pid, signal.SIGSTOP)
            stopped = time.time()
            try:
                m.wait("STATUS=degraded: no fastpath heartbeat", after=len(m.messages()), timeout=10)
                quiet_from = time.time()
                time.sleep(1.2)
                assert _pings(m, quiet_from, time.time()) == 0, m.messages()[-6:]
            finally:
                os.kill(fp_pid, signal.SIGCONT)
            resumed = time.time()
            m.wait("WATCHDOG=1", after=len(m.messages()), timeout=10)
            assert resumed - stopped >= 2.0

            # ipsecgw reload, then SIGHUP: RELOADING=1 then READY=1 each
            for how in ("reload", "sighup"):
                mark = len(m.messages())
                if how == "reload":
                    # a new log_format is not applied by a reload (the fastpath keeps its format): the reply
                    # says a restart is needed
                    cfg.write_text(cfg.read_text().replace("gateway:\n", "gateway:\n  log_format: json\n", 1))
                    out = _cli("reload", sock=sock)
                    assert "unchanged" in out and "restart needed to apply gateway.log_format" in out, out
                else:
                    os.kill(proc.pid, signal.SIGHUP)
                i_rel, _, rel = m.wait("RELOADING=1", after=mark)
                assert "\nMONOTONIC_USEC=" in rel
                m.wait("READY=1", after=i_rel + 1)

            mark = len(m.messages())
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            m.wait("STOPPING=1", after=mark, timeout=5)
            # only the supervisor notified (the pid ip netns exec became)
            assert {pid for _, pid, _ in m.messages()} == {proc.pid}
            # all three processes logged, each line one JSON object
            objs = [json.loads(line) for line in log.read_text().splitlines()]
            assert {"ipsecgw.supervisor", "ipsecgw.daemon", "ipsecgw.fastpath"} <= {o["logger"] for o in objs}
            assert any("service manager notified: ready" in o["event"] for o in objs)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        m.close()
