"""sd_notify spoken by hand (control/sd_notify.py): datagrams on a path or abstract socket, the watchdog
interval from WATCHDOG_USEC / WATCHDOG_PID, nothing outside systemd; and the supervisor's use of it: READY=1
only once the gateway is up, WATCHDOG=1 only while it is healthy, RELOADING=1 then READY=1, STOPPING=1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.config import parse_config
from control.sd_notify import Notifier
from control.supervisor import Supervisor


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(2)
    yield s, path
    s.close()


def _recv_all(s: socket.socket) -> list[str]:
    got = []
    s.setblocking(False)
    try:
        while True:
            got.append(s.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        s.settimeout(2)
    return got


def test_datagrams_on_a_path(listener: tuple[socket.socket, str]) -> None:
    s, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_interval is None
    assert n.ready("running: 1 connection(s)")
    assert s.recv(4096) == b"READY=1\nSTATUS=running: 1 connection(s)"
    assert n.watchdog() and s.recv(4096) == b"WATCHDOG=1"
    assert n.reloading()
    lines = s.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and lines[1][15:].isdigit()
    assert n.stopping() and s.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()


def test_abstract_socket_name() -> None:
    name = f"ipsecgw-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert s.recv(4096) == b"STATUS=hello"
    finally:
        s.close()


def test_watchdog_interval() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}, pid=7).watchdog_interval == 15.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"},
                    pid=7).watchdog_interval == 15.0
    # the watchdog is some other process's (a worker that inherited the variables)
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"},
                    pid=7).watchdog_interval is None
    for bad in ("0", "-5", "soon", ""):
        assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": bad}).watchdog_interval is None


def test_outside_systemd_nothing_happens() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and not n.watchdog() and not n.stopping()


def test_a_vanished_socket_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level("WARNING", logger="ipsecgw.supervisor"):
        assert not n.watchdog() and not n.watchdog()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


CONFIG = """\
gateway:
  control_socket: DIR/ctl.sock
  shm: {path: DIR/gw.shm}
  fastpath: {tun: TUN}
connections: {}
"""


def _supervisor(path: str, monkeypatch: pytest.MonkeyPatch, watchdog_usec: str = "2000000") -> Supervisor:
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", watchdog_usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    # files of this test only, and a TUN name no one has: shutdown() removes both
    text = CONFIG.replace("DIR", str(Path(path).parent)).replace("TUN", f"sdnt{os.getpid() % 100000}")
    return Supervisor("gw.yaml", parse_config(text, "gw.yaml"))


def test_supervisor_ready_only_once_up_then_watchdog(listener: tuple[socket.socket, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    s, path = listener
    sup = _supervisor(path, monkeypatch)
    inf = float("inf")
    health = [(False, "no fastpath heartbeat", inf)]
    monkeypatch.setattr(sup, "_gateway_up", lambda: health[0])
    sup.reload_notes += ["start", "end"]        # a reload before the gateway is up says nothing
    sup._tell_service_manager(100.0)
    sup._tell_service_manager(100.1)           # before the next check: nothing asked, nothing sent
    assert _recv_all(s) == [] and not sup.ready
    # the fastpath attached (one beat, 0.1 s ago) but its loop has not beaten since: not ready yet
    health[0] = (True, "running: 0 connection(s)", 0.1)
    sup._tell_service_manager(100.3)
    health[0] = (True, "running: 0 connection(s)", 0.4)
    sup._tell_service_manager(100.6)
    assert _recv_all(s) == [] and not sup.ready
    health[0] = (True, "running: 0 connection(s)", 0.02)     # a beat since the last check: the loop runs
    sup._tell_service_manager(100.9)
    assert _recv_all(s) == ["READY=1\nSTATUS=running: 0 connection(s)"]
    sup._tell_service_manager(100.91)          # the first watchdog ping follows at once
    sup._tell_service_manager(101.1)           # then one per second (half of 2 s)
    sup._tell_service_manager(101.92)
    assert _recv_all(s) == ["WATCHDOG=1", "WATCHDOG=1"]
    health[0] = (False, "no fastpath heartbeat", inf)
    sup._tell_service_manager(103.0)
    assert _recv_all(s) == ["STATUS=degraded: no fastpath heartbeat"]


def test_supervisor_reload_and_stop(listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    s, path = listener
    sup = _supervisor(path, monkeypatch)
    monkeypatch.setattr(sup, "_gateway_up", lambda: (True, "running", 0.01))
    sup.ready, sup.next_check = True, float("inf")
    sup.reload_notes += ["start", "end"]        # as control's SIGUSR1 / SIGUSR2 leave them
    sup._tell_service_manager(5.0)
    got = _recv_all(s)
    assert [g.split("\n")[0] for g in got] == ["RELOADING=1", "READY=1"]
    monkeypatch.setattr(sup, "_stop_worker", lambda w, t: None)
    sup.shutdown()
    assert _recv_all(s) == ["STOPPING=1\nSTATUS=stopping"]


def test_workers_do_not_inherit_the_notify_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sup = _supervisor(str(tmp_path / "n"), monkeypatch)
    dump = tmp_path / "env"
    p = sup._popen([sys.executable, "-c", f"import os, json; open({str(dump)!r}, 'w').write(json.dumps("
                                          "dict(os.environ)))"], subprocess.DEVNULL)
    p.wait(timeout=30)
    env = json.loads(dump.read_text())
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    assert env["IPSECGW_SUPERVISOR_PID"] == str(os.getpid())
