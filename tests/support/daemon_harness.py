"""Run ``ipsecgw run --control-only`` as a real process and talk to it through its control socket;
``SplitGateways``: both gateways of a ``Topology`` as separate control and fastpath processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdefs.sa import SA, Direction
from control.ctl import ControlError, call
from fastpath.shm import STATE_FREE, FastpathRegion, params_to_sa
from support.netns_tools import FastpathProc, Topology, stop_process

ROOT = Path(__file__).resolve().parents[2]


def gateway_yaml(*, shm: Path, sock: Path, ike_port: int, natt_port: int, local: str, remote: str,
                 remote_port: int, remote_natt_port: int, local_id: str, remote_id: str, local_ts: str,
                 remote_ts: str, start_action: str, psk: str = "daemon-test-psk-0123456789",
                 ike: str = "aes128gcm16-prfsha256-x25519", esp: str = "aes128gcm16", export_keys: bool = True,
                 extra_child: str = "") -> str:
    return f"""\
gateway:
  shm: {{path: {shm}, sa_capacity: 64, policy_capacity: 64, ring_size: 64}}
  control_socket: {sock}
  ike_port: {ike_port}
  natt_port: {natt_port}
  export_keys: {"yes" if export_keys else "no"}
  log_level: debug
connections:
  peer:
    local_addrs: [{local}]
    remote_addrs: [{remote}]
    remote_port: {remote_port}
    remote_natt_port: {remote_natt_port}
    proposals: [{ike}]
    local: {{auth: psk, id: {local_id}}}
    remote: {{auth: psk, id: {remote_id}}}
    children:
      net:
        local_ts: [{local_ts}]
        remote_ts: [{remote_ts}]
        esp_proposals: [{esp}]
        start_action: {start_action}
{extra_child}secrets:
  ike-peer:
    id: [{local_id}, {remote_id}]
    secret: "{psk}"
"""


PAIR_PSK = "anyaddr-psk-0123456789"


def pair_config(tmp: Path, tag: str, *, local: str | None, remote: str, lid: str | None, rid: str, lts: str, rts: str,
                start: str, conn_extra: str = "") -> tuple[Path, Path, Path]:
    """Write the config of one daemon of a ``support.strongswan.NetnsPair`` to ``tmp``/``tag``.yaml (default
    IKE ports, PSK auth): ``local``/``lid`` None leave local_addrs/the local id out (%any, the address as
    identity); ``conn_extra`` are lines added to the connection.  Returns (config, socket, region) paths."""
    shm, sock, cfg = tmp / f"{tag}.shm", tmp / f"{tag}.sock", tmp / f"{tag}.yaml"
    local_line = f"    local_addrs: [{local}]\n" if local else ""
    id_part = f", id: {lid}" if lid else ""
    cfg.write_text(f"""\
gateway:
  shm: {{path: {shm}, sa_capacity: 64, policy_capacity: 64, ring_size: 64}}
  control_socket: {sock}
  log_level: debug
connections:
  peer:
{local_line}    remote_addrs: [{remote}]
{conn_extra}    local: {{auth: psk{id_part}}}
    remote: {{auth: psk, id: {rid}}}
    children:
      net:
        local_ts: [{lts}]
        remote_ts: [{rts}]
        start_action: {start}
secrets:
  ike-peer:
    id: [{rid}]
    secret: "{PAIR_PSK}"
""")
    return cfg, sock, shm


class DaemonProc:
    """One daemon process (optionally inside a network namespace)."""

    def __init__(self, config: Path, sock: Path, shm: Path, netns: str | None = None):
        self.config, self.sock, self.shm = config, sock, shm
        self.log = config.with_suffix(".log")
        cmd = [sys.executable, "-m", "control.cli", "run", "-c", str(config), "--control-only"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                call(str(sock), "status", timeout=2)
                break
            except ControlError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not start:\n{self.log_text()}") from None
                time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def call(self, cmd: str, **args: Any) -> Any:
        return call(str(self.sock), cmd, **args)

    def wait_for(self, what: Callable[[list[dict]], Any], timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            sas = self.call("list-sas")
            got = what(sas)
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; list-sas: {sas}\nlog:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        # ip netns exec execs the daemon in place, so this pid is the daemon itself
        return stop_process(self.proc, sig)


class SplitGateways:
    """Both gateways of a ``Topology``, each as our control daemon (``ctl_a``, ``ctl_b``) and a separate
    ``ipsecgw fastpath`` (``fp_a``, ``fp_b``, logging to fpA.log / fpB.log in ``logs``); a and b are
    ``gateway_config``'s (config, socket, shm) for each side.  On exit every process it started, and every
    one a test hands to ``keep``, is stopped, the newest first."""

    def __init__(self, net: Topology, a: tuple[Path, Path, Path], b: tuple[Path, Path, Path], logs: Path):
        self.net, self.a, self.b, self.logs = net, a, b, logs
        self.procs: list[DaemonProc | FastpathProc | subprocess.Popen] = []

    def __enter__(self) -> SplitGateways:
        try:
            self.ctl_a = self.keep(DaemonProc(*self.a, netns=self.net.gA))
            self.ctl_b = self.keep(DaemonProc(*self.b, netns=self.net.gB))
            self.fp_a = self.keep(FastpathProc(self.net.gA, self.a[0], self.logs / "fpA.log"))
            self.fp_b = self.keep(FastpathProc(self.net.gB, self.b[0], self.logs / "fpB.log"))
        except BaseException:
            self.__exit__()
            raise
        return self

    def keep(self, proc: Any) -> Any:
        """proc, to be stopped on exit."""
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            if isinstance(p, DaemonProc | FastpathProc):
                p.stop()
            elif p.poll() is None:
                p.kill()
                p.wait()


def installed_child(sas: list[dict], name: str = "net") -> dict | None:
    for ike in sas:
        if ike.get("state") != "ESTABLISHED":
            continue
        for c in ike["children"]:
            if c["name"] == name and c["state"] == "INSTALLED":
                return c
    return None


def region_sas(path: Path) -> dict[int, tuple[SA, Direction]]:
    """Every SA installed in a region, read the way the fastpath reads it (seqlocked slot copies)."""
    r = FastpathRegion.attach(path)
    try:
        states = r.slot_states()
        out = {}
        for slot in (states != STATE_FREE).nonzero()[0].tolist():
            cur = r.read_slot(slot)
            if cur is not None:
                out[slot] = params_to_sa(cur.p)
        return out
    finally:
        r.close()
