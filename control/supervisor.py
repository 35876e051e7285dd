"""``ipsecgw run -c CONFIG``: start the control and fastpath processes and keep them running.

The supervisor is a small process of its own: it forwards no packets and speaks no IKE, so it has
little reason to crash, and the two workers can each die and come back without taking the other
along.

- **Start.** Control first (it creates the region and binds IKE), then the fastpath (it waits for the
  region).  Each runs as ``python -m control.cli ...`` in its own process group (a Ctrl-C in the
  terminal reaches only the supervisor, which then stops the workers in order) with a parent-death
  signal (a supervisor killed with -9 takes its workers with it instead of leaving orphans).
- **Restart.** A worker that exits while the gateway runs is started again: at once if it had run
  for a while, with a growing delay (up to 5 s) if it keeps dying right after starting.  A restarted
  fastpath re-attaches to the region and resumes the SAs (no renegotiation); a restarted control adopts
  the SAs it finds there, so traffic keeps flowing, and renegotiates them (control/gateway.py).
  Exit code 2 (configuration error) is not retried: the gateway stops.
- **Warm standby fastpath** (kernel I/O).  Most of a fresh fastpath's start-up is Python importing its
  modules (numpy, cryptography, the config and IKE modules, the engines): about 0.5 s on a quiet
  machine and 1-3 s when the cores are busy, all of it traffic lost after a crash.  So once the
  fastpath has run for ``STANDBY_AFTER`` seconds, the supervisor starts a standby: ``python -m
  control.standby fastpath ...`` (control/standby.py) imports everything and then blocks reading its stdin.
  It holds nothing (no region, TUN or socket).  When the fastpath dies, the standby is told to go (one
  byte on its stdin), and it runs exactly what ``ipsecgw fastpath`` runs, configuration loaded then;
  a new standby follows later.  Closing its stdin (a stop) makes it exit.
- **Stop** (SIGTERM, SIGINT): control first (Deletes to the peers, SAs and policies removed, keys
  zeroed in the region), then the fastpath (engine keys dropped, sockets closed), then the TUN device
  is deleted (the fastpath keeps it while control's heartbeat is fresh, which it still is right after
  control stopped) and the region file removed.  SIGHUP asks control to reload the configuration.
- **systemd** (``Type=notify``, control/systemd/ipsecgw.service, docs/systemd.md).  With ``NOTIFY_SOCKET``
  set the supervisor reports READY=1 once control answers on its socket and sees the fastpath's heartbeat
  (not when the processes merely exist), WATCHDOG=1 every half ``WATCHDOG_USEC`` while the fastpath is
  healthy, RELOADING=1 then READY=1 around a reload (control signals it, SIGUSR1 / SIGUSR2, however the
  reload was asked for: ``ipsecgw reload`` talks to control directly), and STOPPING=1 on a stop.
- **Status.** The supervisor writes a small JSON state file (processes, pids, start times, restarts)
  that control serves through ``ipsecgw status``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from control.config import Config
from control.sd_notify import Notifier

__all__ = ["Supervisor", "STATE_ENV", "SUPERVISOR_PID_ENV", "state_path"]

log = logging.getLogger("ipsecgw.supervisor")

STATE_ENV = "IPSECGW_SUPERVISOR_STATE"
SUPERVISOR_PID_ENV = "IPSECGW_SUPERVISOR_PID"     # control signals reload start/end to this pid
READY_CHECK = 0.25          # seconds between checks that the gateway is up, until it is
POLL = 0.02                 # seconds between checks of the workers: a dead fastpath is noticed at once
STANDBY_AFTER = 2.0         # the fastpath's warm standby starts once the fastpath has run this long
STABLE_AFTER = 3.0          # a worker that ran this long (it was up and working) is restarted without delay
MAX_DELAY = 5.0
CONTROL_STOP_TIMEOUT = 15.0
FASTPATH_STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
EXIT_CONFIG = 2


def state_path(config: Config) -> str:
    """Where the supervisor keeps its state file: beside the control socket."""
    return config.gateway.control_socket + ".state"


def _child_setup() -> None:
    # runs in the child between fork and exec: die with the supervisor
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Worker:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0            # wall clock
    started_mono: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    last_exit: str | None = None
    restart_at: float | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.alive() else None, "started": self.started, "restarts": self.restarts,
                "last_exit": self.last_exit, "running": self.alive()}


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Supervisor:
    config_path: str
    config: Config
    log_level: str | None = None
    out: IO[bytes] | None = None            # where the workers' stderr goes (None: ours)
    log_format: str | None = None           # --log-format, passed on to the workers
    workers: dict[str, Worker] = field(default_factory=dict)
    stopping: bool = False
    reload_requested: bool = False
    exit_code: int = 0
    standby: subprocess.Popen | None = None  # a warm fastpath waiting to take over (kernel I/O only)

    def __post_init__(self) -> None:
        base = [sys.executable, "-m", "control.cli"]
        lv = ["--log-level", self.log_level] if self.log_level else []
        if self.log_format:
            lv += ["--log-format", self.log_format]
        self.workers["control"] = Worker("control", [*base, "run", "-c", self.config_path, "--supervised", *lv])
        self.workers["fastpath"] = Worker("fastpath", [*base, "fastpath", "-c", self.config_path, "--wait", "60",
                                                       *lv])
        self.state_file = state_path(self.config)
        self.started = time.time()
        fp_argv = self.workers["fastpath"].argv
        self.standby_argv = ([sys.executable, "-m", "control.standby", *fp_argv[3:]]
                             if fp_argv[1:3] == ["-m", "control.cli"] else None)
        self.notifier = Notifier()
        self.ready = False
        self.next_check = 0.0               # monotonic: the next readiness or watchdog check
        self.up_seen: float | None = None   # monotonic: the last readiness check that saw the heartbeat
        self.reload_notes: list[str] = []   # "start" / "end", as control signalled them

    # -- workers ----------------------------------------------------------------------------------

    def _popen(self, argv: list[str], stdin: Any) -> subprocess.Popen:
        env = dict(os.environ, **{STATE_ENV: self.state_file, SUPERVISOR_PID_ENV: str(os.getpid())})
        # the service manager's variables are the supervisor's: a worker must not notify in its place
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        err = self.out if self.out is not None else None
        return subprocess.Popen(argv, stdin=stdin, stdout=err, stderr=err, env=env, preexec_fn=_child_setup,
                                process_group=0)

    def _spawn(self, w: Worker) -> None:
        sb = None
        if w.name == "fastpath":
            sb, self.standby = self.standby, None
        if sb is not None and self._promote(sb):
            w.proc = sb
            how = "warm standby promoted"
        else:
            w.proc = self._popen(w.argv, subprocess.DEVNULL)
            how = "started"
        w.started, w.started_mono, w.restart_at = time.time(), time.monotonic(), None
        log.info("%s %s, pid %d", w.name, how, w.proc.pid)
        self._write_state()

    @staticmethod
    def _promote(sb: subprocess.Popen) -> bool:
        """Tell a standby to go; False if it is gone (it is then reaped)."""
        assert sb.stdin is not None
        try:
            if sb.poll() is not None:
                raise BrokenPipeError
            sb.stdin.write(b"g")
            sb.stdin.close()
            return True
        except (BrokenPipeError, ValueError, OSError):
            _stop_standby(sb)
            return False

    def _keep_standby(self, now: float) -> None:
        """Start the fastpath's standby once the fastpath has settled (not during its own start-up, whose
        imports it would slow down on a loaded machine); replace one that died."""
        if self.standby is not None and self.standby.poll() is not None:
            log.warning("fastpath standby (pid %d) ended: %s", self.standby.pid,
                        _describe_exit(self.standby.returncode))
            self.standby = None
        w = self.workers["fastpath"]
        if (self.standby is None and self.standby_argv is not None and w.alive()
                and now - w.started_mono >= STANDBY_AFTER):
            self.standby = self._popen(self.standby_argv, subprocess.PIPE)
            log.debug("fastpath standby started, pid %d", self.standby.pid)

    def _reap(self, w: Worker, now: float) -> None:
        """A worker ended while the gateway runs: schedule its restart (or give up on a config error)."""
        assert w.proc is not None
        code = w.proc.returncode
        ran = now - w.started_mono
        w.last_exit = _describe_exit(code)
        if code == EXIT_CONFIG:
            log.error("%s stopped with a configuration error (exit code 2): stopping the gateway", w.name)
            self.exit_code = EXIT_CONFIG
            self.stopping = True
            return
        w.crashes_in_a_row = 0 if ran >= STABLE_AFTER else w.crashes_in_a_row + 1
        delay = 0.0 if w.crashes_in_a_row <= 1 else min(MAX_DELAY, 0.25 * 2 ** (w.crashes_in_a_row - 2))
        log.warning("%s (pid %d) ended after %.1f s: %s; restarting%s", w.name, w.proc.pid, ran, w.last_exit,
                    f" in {delay:.2f} s" if delay else "")
        w.proc = None
        w.restarts += 1
        w.restart_at = now + delay
        self._write_state()

    def _write_state(self) -> None:
        state = {"supervisor": {"pid": os.getpid(), "started": self.started, "config": self.config_path},
                 "processes": {n: w.as_dict() for n, w in self.workers.items()}}
        tmp = self.state_file + ".tmp"
        try:
            Path(tmp).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot write the state file %s: %s", self.state_file, exc)

    # -- signals ------------------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("%s received: stopping the gateway", signal.Signals(signum).name)
        self.stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload_requested = True

    def _on_reload_note(self, signum: int, frame: object) -> None:
        self.reload_notes.append("start" if signum == signal.SIGUSR1 else "end")

    def _reload(self) -> None:
        from control.ctl import ControlError, call

        self.reload_requested = False
        try:
            res = call(self.config.gateway.control_socket, "reload", timeout=20)
            log.info("reload: %s", res.get("summary", res) if isinstance(res, dict) else res)
        except ControlError as exc:
            log.error("reload failed: %s", exc)

    # -- main loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, self._on_reload_note)
        log.info("ipsecgw gateway starting from %s (supervisor pid %d)", self.config_path, os.getpid())
        self._spawn(self.workers["control"])
        self._spawn(self.workers["fastpath"])
        while not self.stopping:
            time.sleep(POLL)
            now = time.monotonic()
            for w in self.workers.values():
                if w.proc is not None and w.proc.poll() is not None and not self.stopping:
                    self._reap(w, now)
                if w.proc is None and w.restart_at is not None and now >= w.restart_at and not self.stopping:
                    self._spawn(w)
            if not self.stopping:
                self._keep_standby(now)
            if self.reload_requested:
                self._reload()
            self._tell_service_manager(now)
        self.shutdown()
        return self.exit_code

    def _stop_worker(self, w: Worker, timeout: float) -> None:
        if not w.alive():
            return
        assert w.proc is not None
        w.proc.send_signal(signal.SIGTERM)
        try:
            code = w.proc.wait(timeout=timeout)
            log.info("%s stopped (%s)", w.name, _describe_exit(code))
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s: killed", w.name, timeout)
            w.proc.kill()
            w.proc.wait()

    # -- the service manager (systemd) ----------------------------------------------------------------

    def _gateway_up(self) -> tuple[bool, str, float]:
        """Control answers on its socket and sees the fastpath's heartbeat in the region; the heartbeat's age
        in seconds (inf when there is none)."""
        from control.ctl import ControlError, call

        if not self.workers["fastpath"].alive() or not self.workers["control"].alive():
            return False, "a worker is not running", float("inf")
        try:
            st = call(self.config.gateway.control_socket, "status", timeout=2)
        except ControlError as exc:
            return False, f"control does not answer: {exc}", float("inf")
        fp = (st.get("processes") or {}).get("fastpath") or {} if isinstance(st, dict) else {}
        age = fp.get("heartbeat_age")
        if not fp.get("alive") or age is None:
            return False, "no fastpath heartbeat", float("inf")
        ike, child = st.get("ike_sas", "?"), st.get("child_sas", "?")
        return True, (f"running: {len(st.get('connections') or [])} connection(s), {ike} IKE SA(s), "
                      f"{child} CHILD SA(s), fastpath pid {fp.get('pid')}"), float(age)

    def _tell_service_manager(self, now: float) -> None:
        n = self.notifier
        if not n.enabled or not self.ready:
            # a reload during start-up: READY=1 comes once, when the gateway is up
            self.reload_notes.clear()
        if not n.enabled:
            return
        while self.reload_notes:
            if self.reload_notes.pop(0) == "start":
                n.reloading()
            else:
                up, why, _ = self._gateway_up()
                n.ready(why if up else f"reloaded; {why}")
        if now < self.next_check:
            return
        if not self.ready:
            self.next_check = now + READY_CHECK
            up, why, age = self._gateway_up()
            # the fastpath beats once when it attaches, before its TUN and sockets are set up, and then from
            # its main loop: ready only once a beat came after a check that already saw one (half the time
            # between the checks: the status calls' own latency must not pass for a beat)
            moved = self.up_seen is not None and age < (now - self.up_seen) / 2
            self.up_seen = now if up else None
            if up and moved:
                self.ready = True
                n.ready(why)
                log.info("service manager notified: ready (%s)", why)
                self.next_check = now
            return
        if n.watchdog_interval is None:
            self.next_check = float("inf")
            return
        self.next_check = now + n.watchdog_interval
        up, why, _ = self._gateway_up()
        if up:
            n.watchdog()
        else:
            # no ping: if this lasts past WatchdogSec the service manager restarts the gateway
            log.warning("watchdog ping withheld: %s", why)
            n.status(f"degraded: {why}")

    def shutdown(self) -> None:
        self.notifier.stopping()
        # control first: it sends the Deletes and removes the SAs (keys zeroed) while the fastpath still runs
        if self.standby is not None:
            _stop_standby(self.standby)
            self.standby = None
        self._stop_worker(self.workers["control"], CONTROL_STOP_TIMEOUT)
        self._stop_worker(self.workers["fastpath"], FASTPATH_STOP_TIMEOUT)
        tun = self.config.gateway.fastpath.tun
        if Path(f"/sys/class/net/{tun}").exists():
            r = subprocess.run(["ip", "link", "del", tun], capture_output=True, text=True)
            if r.returncode == 0:
                log.info("TUN %s removed", tun)
            else:
                log.warning("cannot remove TUN %s: %s", tun, r.stderr.strip())
        # nothing is attached any more, and control left no SA in it: the next start creates a fresh region
        from fastpath.totals import status_path as totals_path

        for path in (self.config.gateway.shm_path, self.state_file, totals_path(self.config.gateway.shm_path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)
        log.info("gateway stopped")


def _stop_standby(sb: subprocess.Popen) -> None:
    """A standby exits when its stdin closes; one that does not is killed."""
    try:
        if sb.stdin is not None and not sb.stdin.closed:
            sb.stdin.close()
        sb.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        sb.kill()
        sb.wait()


def run_supervisor(config_path: str, config: Config, log_level: str | None, log_file: str | None,
                   log_format: str | None = None) -> int:
    """``ipsecgw run`` without ``--control-only``: returns the exit code."""
    from fastpath.logs import setup_logging

    path = log_file or config.gateway.log_file
    out: IO[bytes] | None = None
    stream: Any = None
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            out = open(path, "ab", buffering=0)       # noqa: SIM115 - shared with the workers for their lifetime
        except OSError as exc:
            print(f"ipsecgw run: cannot open the log file {path}: {exc.strerror}", file=sys.stderr)
            return 1
        stream = open(out.fileno(), "w", buffering=1, closefd=False)   # noqa: SIM115
    setup_logging(log_level or config.gateway.log_level, stream, log_format or config.gateway.log_format)
    try:
        return Supervisor(config_path, config, log_level, out, log_format).run()
    finally:
        if out is not None:
            out.close()
