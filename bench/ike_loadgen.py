"""IKE set-up load: many concurrent initiators against one responder, and a responder to aim them at.

``initiate`` keeps ``concurrency`` IKE SAs in flight, each slot on its own UDP port with its own
identity (``@g<slot>.bench``), PSK, one CHILD SA in IKE_AUTH.  A set-up counts when the
``ChildSaEstablished`` of IKE_AUTH arrives inside the measurement window; the SA is then deleted
at once (INFORMATIONAL Delete) and the slot starts the next one, so neither end accumulates state.
It runs on plain non-blocking sockets and a selector rather than asyncio, so the generator
spends its core on IKE and little on the event loop.

``respond`` serves ``IkeUdpEndpoint`` (control/ike_udp.py, the product's UDP layer over the
sans-IO core) with the COOKIE threshold and half-open bound raised out of the way: the bench
measures set-ups, not DoS protection.

Both print one JSON line.  ``--watch-pid`` makes the generator read that process's CPU time
(/proc/<pid>/stat, every thread) over the same window, so a responder's set-ups per CPU-second
can be reported even when the generator, not the responder, is the bottleneck.

    .venv/bin/python bench/ike_loadgen.py respond --local 192.0.2.2
    .venv/bin/python bench/ike_loadgen.py initiate --local 192.0.2.1 --remote 192.0.2.2 --seconds 5

A script run by path (bench/ is not a package), like the other bench tools; bench/ike_setup_cost.py
imports its identities and CHILD SA settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time

from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaDeleted, IkeSaEstablished, IkeSaFailed, State
from control.ike.sa import IkeSA
from control.ike.ts_payload import TrafficSelectorEntry

INITIATOR_TS = "10.1.0.0/16"
RESPONDER_TS = "10.2.0.0/16"
RESPONDER_ID = "responder.bench"
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _child(local_ts: str, remote_ts: str, esp: str) -> ChildConfig:
    return ChildConfig("bench", [TrafficSelectorEntry.from_network(local_ts)],
                       [TrafficSelectorEntry.from_network(remote_ts)], esp_proposals=esp)


class LoadGenerator:
    """``concurrency`` slots, each a socket and an identity, each with at most one set-up in flight."""

    def __init__(self, local_ip: str, remote_ip: str, psk: bytes, *, concurrency: int = 32,
                 ike: str = "aes128gcm16-prfsha256-x25519", esp: str = "aes128gcm16", remote_port: int = 500,
                 remote_natt_port: int = 4500):
        self.remote = (remote_ip, remote_port)
        self.sel = selectors.DefaultSelector()
        self.socks: dict[int, socket.socket] = {}
        self.configs: list[IkeConfig] = []
        child = _child(INITIATOR_TS, RESPONDER_TS, esp)
        self.natt_ports: set[int] = set()
        for i in range(concurrency):
            port, natt_port = self._socket(local_ip), self._socket(local_ip)
            self.natt_ports.add(natt_port)
            # each slot has its own NAT-T socket too: charon with kernel-libipsec fakes a NAT, so we float
            self.configs.append(IkeConfig(Identity.from_string(f"@g{i}.bench"), psk,
                                          Identity.from_string(RESPONDER_ID), ike_proposals=ike,
                                          children=[child], local_port=port, local_natt_port=natt_port,
                                          remote_port=remote_port, remote_natt_port=remote_natt_port))
        self.local_ip = local_ip
        self.sas: dict[bytes, IkeSA] = {}          # by our SPI (the initiator's)
        self.slot_sa: list[IkeSA | None] = [None] * concurrency
        self.slot_of: dict[bytes, int] = {}
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.starting = True
        self.setups = 0
        self.setups_total = 0
        self.failed = 0
        self.latency = 0.0

    def _socket(self, local_ip: str) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((local_ip, 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        self.socks[port] = s
        self.sel.register(s, selectors.EVENT_READ, port)
        return port

    def close(self) -> None:
        self.sel.close()
        for s in self.socks.values():
            s.close()

    def _start(self, slot: int, now: float) -> None:
        cfg = self.configs[slot]
        sa = IkeSA(cfg, initiator=True, local=(self.local_ip, cfg.local_port), remote=self.remote)
        self.sas[sa.our_spi] = sa
        self.slot_sa[slot] = sa
        self.slot_of[sa.our_spi] = slot
        sa.initiate(now)
        self._flush(sa, now)

    def _slot_done(self, sa: IkeSA, now: float) -> None:
        slot = self.slot_of.pop(sa.our_spi, None)
        if slot is not None and self.slot_sa[slot] is sa:
            self.slot_sa[slot] = None
            if self.starting:
                self._start(slot, now)

    def _flush(self, sa: IkeSA, now: float) -> None:
        for d in sa.datagrams_to_send():
            try:
                self.socks[d.local_port].sendto(d.data, d.remote)
            except BlockingIOError:
                pass                # a full socket buffer is a lost datagram; retransmission covers it
        while (ev := sa.next_event()) is not None:
            if isinstance(ev, ChildSaEstablished):
                self.setups_total += 1
                if self.window[0] <= now < self.window[1]:
                    self.setups += 1
                    self.latency += now - (sa.created_at or now)
                sa.delete(now)
                self._flush(sa, now)
                self._slot_done(sa, now)
            elif isinstance(ev, (ChildSaFailed, IkeSaFailed)):
                self.failed += 1
                self._slot_done(sa, now)
            elif isinstance(ev, IkeSaDeleted):
                self._slot_done(sa, now)
        if sa.state == State.DEAD:
            self.sas.pop(sa.our_spi, None)
            self._slot_done(sa, now)

    def _receive(self, port: int, now: float) -> None:
        s = self.socks[port]
        while True:
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                return
            spi = data[4:12] if port in self.natt_ports else data[:8]
            sa = self.sas.get(spi)
            if sa is not None:
                sa.receive_datagram(data, port, addr, now)
                self._flush(sa, now)

    def _timers(self, now: float) -> None:
        for sa in list(self.sas.values()):
            t = sa.get_timer()
            if t is not None and t <= now:
                sa.handle_timer(now)
                self._flush(sa, now)

    def _loop(self, until: float) -> None:
        next_timers = 0.0
        while (now := time.monotonic()) < until:
            for key, _ in self.sel.select(timeout=min(0.05, until - now)):
                self._receive(key.data, time.monotonic())
            now = time.monotonic()
            if now >= next_timers:
                self._timers(now)
                next_timers = now + 0.05

    def run(self, warmup: float, seconds: float, watch_pid: int | None = None, drain: float = 2.0) -> dict:
        t = time.monotonic()
        for slot in range(len(self.configs)):
            self._start(slot, t)
        self._loop(t + warmup)
        t0 = time.monotonic()
        self.window = (t0, t0 + seconds)
        cpu0, peer0 = time.process_time(), proc_cpu(watch_pid) if watch_pid else 0.0
        self._loop(t0 + seconds)
        t1 = time.monotonic()
        cpu1, peer1 = time.process_time(), proc_cpu(watch_pid) if watch_pid else 0.0
        # stop starting, let the Deletes of the last ones finish so the responder ends clean
        self.starting = False
        for sa in list(self.sas.values()):
            if sa.state == State.ESTABLISHED and sa.outstanding_task is None:
                sa.delete(t1)
                self._flush(sa, t1)
        end = time.monotonic() + drain
        while self.sas and time.monotonic() < end:
            self._loop(min(end, time.monotonic() + 0.1))
        elapsed = t1 - t0
        out = {"setups": self.setups, "seconds": round(elapsed, 3), "rate": self.setups / elapsed,
               "failed": self.failed, "setups_total": self.setups_total,
               "mean_latency_ms": 1000 * self.latency / self.setups if self.setups else None,
               "initiator_cpu_s": round(cpu1 - cpu0, 3),
               "initiator_per_cpu_s": self.setups / (cpu1 - cpu0) if cpu1 > cpu0 else None,
               "left_in_flight": len(self.sas)}
        if watch_pid:
            out["responder_cpu_s"] = round(peer1 - peer0, 3)
            out["responder_util"] = (peer1 - peer0) / elapsed
            out["responder_per_cpu_s"] = self.setups / (peer1 - peer0) if peer1 > peer0 else None
        return out


class _BufferedFileHandler(logging.StreamHandler):
    """Lines to a block-buffered file, written out as the buffer fills and at close: what charon's
    filelog does with ``flush_line = no``, as the benchmark configures it."""

    def __init__(self, path: str):
        super().__init__(open(path, "a", buffering=1 << 16))  # noqa: SIM115 - closed in close()

    def flush(self) -> None:
        pass                    # not after every line

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.stream.close()
        super().close()


def _log_to(path: str | None) -> logging.Logger:
    """The responder's operator log: INFO lines to ``path`` (warnings only, to stderr, without one)."""
    log = logging.getLogger("ipsecgw.loadgen")
    log.propagate = False
    if path:
        handler: logging.Handler = _BufferedFileHandler(path)
        # like charon's filelog as the benchmark sets it up: no time stamp, the level, the line
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.WARNING)
    return log


async def _respond(local_ip: str, psk: bytes, ike: str, esp: str, log_path: str | None = None) -> dict:
    from control.ike.cookie import ResponderGate
    from control.ike_udp import IkeUdpEndpoint

    counts = {"ike_established": 0, "child_established": 0, "deleted": 0, "failed": 0}
    # the lines an operator of the daemon gets per IKE SA (control/daemon.py logs the same events), so a
    # comparison with charon, which logs its own at level 0, is like for like
    log = _log_to(log_path)
    info = log.isEnabledFor(logging.INFO)

    def on_event(sa: IkeSA, ev: object) -> None:
        if isinstance(ev, IkeSaEstablished):
            counts["ike_established"] += 1
            if info:
                log.info("IKE SA %s_i %s_r established with %s (%s), local id %s, peer initiated",
                         ev.spi_i.hex(), ev.spi_r.hex(), ev.remote[0], ev.remote_id, ev.local_id)
        elif isinstance(ev, ChildSaEstablished):
            counts["child_established"] += 1
            if info:
                log.info("CHILD SA %s installed: %s, SPIs in 0x%08x out 0x%08x", ev.name, ev.suite.enc,
                         ev.inbound.spi, ev.outbound.spi)
        elif isinstance(ev, IkeSaDeleted):
            counts["deleted"] += 1
            if info:
                log.info("IKE SA %s_i %s_r with %s deleted: %s", ev.spi_i.hex(), ev.spi_r.hex(), sa.remote[0],
                         ev.reason)
        elif isinstance(ev, (IkeSaFailed, ChildSaFailed)):
            counts["failed"] += 1
            log.warning("%s: %s", type(ev).__name__, ev.reason)

    cfg = IkeConfig(Identity.from_string(RESPONDER_ID), psk, None, ike_proposals=ike,
                    children=[_child(RESPONDER_TS, INITIATOR_TS, esp)])
    gate = ResponderGate(cookie_threshold=100_000, max_half_open=100_000)
    ep = IkeUdpEndpoint(local_ip, (500, 4500), responder_config=cfg, on_event=on_event, gate=gate)
    await ep.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    ep.close()
    return dict(counts, sas_left=len(ep.sas), gate=dict(gate.stats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/ike_loadgen.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("initiate", "respond"):
        s = sub.add_parser(name)
        s.add_argument("--local", required=True)
        s.add_argument("--psk", default="bench-ike-setup-psk-0123456789")
        s.add_argument("--ike", default="aes128gcm16-prfsha256-x25519")
        s.add_argument("--esp", default="aes128gcm16")
        if name == "respond":
            s.add_argument("--log", help="write the operator log (INFO: IKE SA up, CHILD SA up, IKE SA deleted) here")
        if name == "initiate":
            s.add_argument("--remote", required=True)
            s.add_argument("--remote-port", type=int, default=500)
            s.add_argument("--concurrency", type=int, default=32)
            s.add_argument("--warmup", type=float, default=1.0)
            s.add_argument("--seconds", type=float, default=5.0)
            s.add_argument("--watch-pid", type=int)
    a = p.parse_args(argv)
    if a.mode == "respond":
        out = asyncio.run(_respond(a.local, a.psk.encode(), a.ike, a.esp, a.log))
    else:
        gen = LoadGenerator(a.local, a.remote, a.psk.encode(), concurrency=a.concurrency, ike=a.ike, esp=a.esp,
                            remote_port=a.remote_port)
        try:
            out = gen.run(a.warmup, a.seconds, a.watch_pid)
        finally:
            gen.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
