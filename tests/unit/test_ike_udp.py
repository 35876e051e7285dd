"""IkeUdpEndpoint's socket layer: batched reads, direct sends, the half-open count kept without scans."""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.constants import NATT_KEEPALIVE
from control.ike.events import ChildSaEstablished, IkeSaDeleted, State
from control.ike.sa import IkeSA
from control.ike.ts_payload import TrafficSelectorEntry
from control.ike_udp import READ_BATCH, IkeUdpEndpoint

PSK = b"udp-layer-test-psk"
BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_tool(name: str) -> ModuleType:
    """A tool in bench/ (scripts run by path, not a package; bench/ike_setup_cost.py imports ike_loadgen as
    its neighbour).  bench/ goes last on sys.path so its conftest.py and the like never shadow tests/'."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    return importlib.import_module(name)


def _ports() -> tuple[int, int]:
    # two free UDP ports on loopback, not the well-known ones another test may hold
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = socks[0].getsockname()[1], socks[1].getsockname()[1]
    for s in socks:
        s.close()
    return ports


def _child(local: str, remote: str) -> ChildConfig:
    return ChildConfig("net", [TrafficSelectorEntry.from_network(local)], [TrafficSelectorEntry.from_network(remote)])


def test_one_wake_up_drains_many_datagrams() -> None:
    """Datagrams queued before the loop looks are read in one callback, up to READ_BATCH of them."""

    async def run() -> tuple[int, int]:
        ike, natt = _ports()
        ep = IkeUdpEndpoint("127.0.0.1", (ike, natt))
        await ep.start()
        calls = 0
        inner = ep._readable

        def counting(s):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            inner(s)

        loop = asyncio.get_running_loop()
        sock = ep._socks[natt].sock
        loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), counting, ep._socks[natt])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(READ_BATCH + 5):
                tx.sendto(NATT_KEEPALIVE, ("127.0.0.1", natt))
            for _ in range(50):
                await asyncio.sleep(0.01)
                if ep.keepalives_received == READ_BATCH + 5:
                    break
        ep.close()
        return calls, ep.keepalives_received

    calls, got = asyncio.run(run())
    assert got == READ_BATCH + 5
    assert 2 <= calls <= 3         # one full batch, then the rest (and at most one empty look)


def test_two_endpoints_set_up_and_delete_over_loopback() -> None:
    """Our initiator and responder, each an IkeUdpEndpoint: IKE SA + CHILD SA, then a Delete; the
    responder's half-open count goes back to zero and no SA is left on either side."""

    async def run() -> tuple[list, list, IkeUdpEndpoint, IkeUdpEndpoint]:
        r_ports, i_ports = _ports(), _ports()
        r_events: list = []
        i_events: list = []
        rcfg = IkeConfig(Identity.from_string("@responder.test"), PSK, None,
                         children=[_child("10.2.0.0/16", "10.1.0.0/16")], local_port=r_ports[0],
                         local_natt_port=r_ports[1])
        icfg = IkeConfig(Identity.from_string("@initiator.test"), PSK, Identity.from_string("@responder.test"),
                         children=[_child("10.1.0.0/16", "10.2.0.0/16")], local_port=i_ports[0],
                         local_natt_port=i_ports[1], remote_port=r_ports[0], remote_natt_port=r_ports[1])
        resp = IkeUdpEndpoint("127.0.0.1", r_ports, responder_config=rcfg,
                              on_event=lambda sa, ev: r_events.append(ev))
        init = IkeUdpEndpoint("127.0.0.1", i_ports, on_event=lambda sa, ev: i_events.append(ev))
        await resp.start()
        await init.start()
        sa = init.initiate(icfg, "127.0.0.1")
        for _ in range(300):
            await asyncio.sleep(0.01)
            if any(isinstance(e, ChildSaEstablished) for e in i_events):
                break
        assert resp.half_open() == 0 and len(resp._half_open_key) == 0
        init.call(sa, IkeSA.delete)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if sa.state == State.DEAD and any(isinstance(e, IkeSaDeleted) for e in r_events):
                break
        init.close()
        resp.close()
        return i_events, r_events, init, resp

    i_events, r_events, init, resp = asyncio.run(run())
    ours = [e for e in i_events if isinstance(e, ChildSaEstablished)]
    theirs = [e for e in r_events if isinstance(e, ChildSaEstablished)]
    assert len(ours) == len(theirs) == 1
    assert ours[0].outbound.spi == theirs[0].inbound.spi and ours[0].inbound.spi == theirs[0].outbound.spi
    assert ours[0].outbound.enc_key == theirs[0].inbound.enc_key
    assert any(isinstance(e, IkeSaDeleted) for e in r_events)
    assert not init.sas and not resp.sas


def test_full_send_buffer_queues_in_order() -> None:
    """A send that would block is queued and goes out, in order, once the socket is writable."""

    async def run() -> tuple[list[bytes], list[bytes]]:
        ike, natt = _ports()
        ep = IkeUdpEndpoint("127.0.0.1", (ike, natt))
        await ep.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            dest = rx.getsockname()
            s = ep._socks[ike]
            real = s.sock

            class Full:
                """The first two sends find the buffer full."""

                def __init__(self) -> None:
                    self.left = 2

                def sendto(self, data: bytes, addr: tuple) -> int:
                    if self.left:
                        self.left -= 1
                        raise BlockingIOError
                    return real.sendto(data, addr)

                def fileno(self) -> int:
                    return real.fileno()

            s.sock = Full()  # type: ignore[assignment]
            payloads = [os.urandom(8) for _ in range(4)]
            for p in payloads:
                ep.send_raw(p, ike, dest)
            assert len(s.pending) == 4           # the first blocked, the rest wait behind it
            got: list[bytes] = []
            for _ in range(100):
                await asyncio.sleep(0.01)
                try:
                    while True:
                        got.append(rx.recv(100))
                except BlockingIOError:
                    pass
                if len(got) == 4:
                    break
            s.sock = real
        ep.close()
        return payloads, got

    sent, got = asyncio.run(run())
    assert got == sent


def test_setup_cost_tool_runs_whole_set_ups() -> None:
    """The in-process cost tool drives complete set-ups (INIT, AUTH, Delete) through the endpoint's receive
    path: every responder IKE SA is gone afterwards and each exchange took some CPU."""
    setup_cost = _bench_tool("ike_setup_cost")

    out = setup_cost.measure(10, warmup=2)
    assert out["sas_left"] == 0
    assert set(out["per_exchange_us"]) == set(setup_cost.PHASES)
    assert all(us > 0 for us in out["per_exchange_us"].values()), out
    assert out["responder_cpu_us_per_setup"] > 0


def test_responder_log_lines_reach_the_file_at_close(tmp_path) -> None:
    """ike_loadgen.py respond --log: block-buffered like charon's filelog, complete once the handler closes."""
    path = tmp_path / "responder.log"
    log = _bench_tool("ike_loadgen")._log_to(str(path))
    try:
        for n in range(3):
            log.info("IKE SA %d established", n)
    finally:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
    assert path.read_text().splitlines() == [f"INFO IKE SA {n} established" for n in range(3)]
