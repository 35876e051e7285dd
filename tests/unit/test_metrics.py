"""The Prometheus endpoint without root or a fastpath: the IKE counts (messages by exchange and direction,
failures by reason, the daemon's hooks), the collector's families over a snapshot (types, HELP, label
values, spi as 0x-hex, a dead SA's series gone at the next scrape), drops read from a real fastpath totals
file, and the HTTP server thread fetching its snapshot from a running event loop (200 and parseable; a
snapshot that raises answers 500 and the next scrape works)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.daemon_harness import gateway_yaml
from support.ike_messages import full_init

from control.config import parse_config
from control.config.model import GatewayConfig
from control.daemon import Daemon
from control.ike.constants import NON_ESP_MARKER, ExchangeType, Notify
from control.ike.events import ChildSaFailed, Datagram, IkeSaEstablished, IkeSaFailed, State
from control.ike.message import Message
from control.ike_counts import IkeCounts
from control.metrics.collector import GatewayCollector
from control.metrics.server import MetricsServer
from control.metrics.snapshot import take_snapshot
from fastpath.status import Status
from fastpath.totals import Totals, write_status


def ike_message(exchange: int, response: bool = False) -> bytes:
    return Message(b"\x11" * 8, b"\x22" * 8, exchange, 0x20 if response else 0x08, 1, []).serialize()


# -- counting -------------------------------------------------------------------------------------------------


def test_messages_by_exchange_and_direction() -> None:
    c = IkeCounts()
    c.received(full_init(), natt=False)
    c.received(NON_ESP_MARKER + ike_message(ExchangeType.IKE_AUTH), natt=True)
    c.received(b"\x00\x00\x10\x01" + bytes(40), natt=True)        # ESP-in-UDP: the fastpath's, not IKE
    c.received(b"\xff", natt=True)                                 # NAT-T keepalive
    c.received(bytes(20), natt=False)                              # too short for an IKE header
    c.received(ike_message(99), natt=False)                        # an exchange we do not know
    c.sent(ike_message(ExchangeType.IKE_SA_INIT, response=True), natt=False)
    c.sent(NON_ESP_MARKER + ike_message(ExchangeType.INFORMATIONAL), natt=True)
    c.sent(NON_ESP_MARKER + ike_message(ExchangeType.INFORMATIONAL), natt=True)
    assert dict(c.messages) == {("IKE_SA_INIT", "in"): 1, ("IKE_AUTH", "in"): 1, ("other", "in"): 1,
                                ("IKE_SA_INIT", "out"): 1, ("INFORMATIONAL", "out"): 2}
    assert c.as_json()["messages"] == {"in": {"IKE_AUTH": 1, "IKE_SA_INIT": 1, "other": 1},
                                       "out": {"IKE_SA_INIT": 1, "INFORMATIONAL": 2}}


def test_failures_by_reason() -> None:
    c = IkeCounts()
    c.event(IkeSaFailed(Notify.NO_PROPOSAL_CHOSEN, "no proposal matched"))
    c.event(IkeSaFailed(Notify.AUTHENTICATION_FAILED, "AUTH payload did not verify"))
    c.event(ChildSaFailed("net", Notify.TS_UNACCEPTABLE, "no overlap"))
    c.event(ChildSaFailed("net", Notify.TS_UNACCEPTABLE, "no overlap"))
    c.event(IkeSaFailed(0, "no response to IKE_SA_INIT after 6 transmissions"))
    c.event(IkeSaFailed(0, "deleted before it was established"))
    c.event(IkeSaFailed(12345, "a notify number without a name"))
    c.event(IkeSaEstablished(b"", b"", True, None, None, None, ("192.0.2.1", 500), False, False))  # no failure
    c.timed_out()
    assert c.as_json()["negotiation_failures"] == {"AUTHENTICATION_FAILED": 1, "NO_PROPOSAL_CHOSEN": 1,
                                                   "TS_UNACCEPTABLE": 2, "notify 12345": 1, "other": 1,
                                                   "timeout": 2}


def _config(tmp_path: Path) -> Any:
    text = gateway_yaml(shm=tmp_path / "gw.shm", sock=tmp_path / "gw.sock", ike_port=500, natt_port=4500,
                        local="'198.51.100.1'", remote="'198.51.100.2'", remote_port=500, remote_natt_port=4500,
                        local_id="gw-a.example", remote_id="gw-b.example", local_ts="10.1.0.0/16",
                        remote_ts="10.2.0.0/16", start_action="none", export_keys=False)
    return parse_config(text, "gw.yaml")


def test_daemon_counts_where_datagrams_cross_and_failures_arrive(tmp_path: Path) -> None:
    d = Daemon(_config(tmp_path))
    sent: list[bytes] = []
    d.socks[("198.51.100.1", 4500)] = SimpleNamespace(send=lambda data, remote: sent.append(data))
    d.send("198.51.100.1", Datagram(NON_ESP_MARKER + ike_message(ExchangeType.IKE_AUTH), 4500,
                                    ("198.51.100.2", 4500)))
    d.send("198.51.100.1", Datagram(ike_message(ExchangeType.IKE_AUTH), 500, ("198.51.100.2", 500)))  # no socket
    assert len(sent) == 1 and dict(d.ike_counts.messages) == {("IKE_AUTH", "out"): 1}

    got: list[bytes] = []
    d.intake = SimpleNamespace(received=lambda data, local_ip, port, remote: got.append(data))   # type: ignore
    sock = SimpleNamespace(local_ip="198.51.100.1",
                           read_batch=lambda deliver: deliver(full_init(), 500, ("198.51.100.2", 500)))
    d._readable(sock)           # type: ignore[arg-type]
    assert got and d.ike_counts.messages[("IKE_SA_INIT", "in")] == 1

    d.events = SimpleNamespace(handle=lambda ev, entry: None)       # type: ignore[assignment]
    d._act(SimpleNamespace(conn=None), ChildSaFailed("net", Notify.NO_PROPOSAL_CHOSEN, "x"), None)  # type: ignore
    assert d.ike_counts.failures == {"NO_PROPOSAL_CHOSEN": 1}


# -- the collector over a snapshot ----------------------------------------------------------------------------


class FakeView:
    """FastpathView's reading side: per-slot counters as the region would give them."""

    def __init__(self) -> None:
        self.counters: dict[int, dict[str, Any]] = {}
        self.adoption = SimpleNamespace(adopted_sas={})
        self.fail = False

    def slot_counters(self, slot: int, sa_id: int) -> dict[str, Any] | None:
        if self.fail:
            raise RuntimeError("region unreadable")
        return self.counters.get(slot, {"packets": 0, "bytes": 0, "drops": {}}) if slot >= 0 else None

    def software(self) -> list[Any]:
        return [SimpleNamespace(name="ipsec-mb"), SimpleNamespace(name="openssl")]

    def totals(self) -> dict[str, Any]:
        return {"in": {"packets": 0, "bytes": 0, "drops": {"auth-failed": 2}},
                "out": {"packets": 0, "bytes": 0, "drops": {}}}


def child(name: str, spi_in: int, spi_out: int, slot_in: int, slot_out: int, state: str = "INSTALLED") -> Any:
    return SimpleNamespace(name=name, spi_in=spi_in, spi_out=spi_out, slot_in=slot_in, slot_out=slot_out,
                           id_in=slot_in + 100, id_out=slot_out + 100, state=state)


def fake_daemon(tmp_path: Path) -> Any:
    d = SimpleNamespace(ike_sas=[SimpleNamespace(ike=SimpleNamespace(state=State.ESTABLISHED)),
                                 SimpleNamespace(ike=SimpleNamespace(state=State.CONNECTING))],
                        children=[child("net", 0xC0FFEE01, 0x0000ABCD, 0, 1), child("net6", 0xC0FFEE02, 0x12, 2, 3)],
                        gw=GatewayConfig(shm_path=str(tmp_path / "gw.shm")), ike_counts=IkeCounts(),
                        region=SimpleNamespace(fastpath_alive=lambda: True))
    d.ike_counts.received(full_init(), natt=False)
    d.ike_counts.event(IkeSaFailed(Notify.NO_PROPOSAL_CHOSEN, "x"))
    return d


def scrape(d: Any, view: FakeView) -> dict[str, Any]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(lambda: take_snapshot(d, view, "9.9.9")))
    text = generate_latest(reg).decode()
    return {"text": text, **{f.name: f for f in text_string_to_metric_families(text)}}


def samples(fam: Any, suffix: str = "") -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name == fam.name + suffix}


def test_families_types_and_labels(tmp_path: Path) -> None:
    d, view = fake_daemon(tmp_path), FakeView()
    view.counters = {0: {"packets": 7, "bytes": 700, "drops": {}}, 1: {"packets": 5, "bytes": 420, "drops": {}}}
    t = Totals()
    t.inbound[Status.OK] = 12
    t.inbound[Status.NO_SA] = 3
    t.inbound[Status.REPLAY] = 1
    t.send_failed = 4
    write_status(d.gw.shm_path, t, 0.0)         # the file the fastpath writes twice a second
    m = scrape(d, view)
    types = {name: m[name].type for name in ("ipsecgw_ike_sas", "ipsecgw_child_sas", "ipsecgw_sa_packets",
                                             "ipsecgw_sa_bytes", "ipsecgw_drops", "ipsecgw_ike_messages",
                                             "ipsecgw_negotiation_failures", "ipsecgw_fastpath_up", "ipsecgw_info")}
    assert types == {"ipsecgw_ike_sas": "gauge", "ipsecgw_child_sas": "gauge", "ipsecgw_sa_packets": "counter",
                     "ipsecgw_sa_bytes": "counter", "ipsecgw_drops": "counter", "ipsecgw_ike_messages": "counter",
                     "ipsecgw_negotiation_failures": "counter", "ipsecgw_fastpath_up": "gauge", "ipsecgw_info": "gauge"}
    for line in ("# TYPE ipsecgw_sa_packets_total counter", "# HELP ipsecgw_drops_total ",
                 "# TYPE ipsecgw_fastpath_up gauge", "# TYPE ipsecgw_info gauge"):
        assert line in m["text"], line
    assert samples(m["ipsecgw_ike_sas"])[(("state", "ESTABLISHED"),)] == 1
    assert samples(m["ipsecgw_ike_sas"])[(("state", "DELETING"),)] == 0      # every state, so sums never vanish
    assert samples(m["ipsecgw_child_sas"])[(("state", "INSTALLED"),)] == 2
    pk = samples(m["ipsecgw_sa_packets"], "_total")
    assert pk[(("child", "net"), ("dir", "in"), ("spi", "0xc0ffee01"))] == 7
    assert pk[(("child", "net"), ("dir", "out"), ("spi", "0x0000abcd"))] == 5
    assert pk[(("child", "net6"), ("dir", "out"), ("spi", "0x00000012"))] == 0
    assert len(pk) == 4
    assert samples(m["ipsecgw_sa_bytes"], "_total")[(("child", "net"), ("dir", "out"), ("spi", "0x0000abcd"))] == 420
    drops = samples(m["ipsecgw_drops"], "_total")
    assert drops[(("dir", "in"), ("reason", "no-sa"))] == 3 and drops[(("dir", "in"), ("reason", "replay"))] == 1
    assert drops[(("dir", "out"), ("reason", "send-failed"))] == 4
    assert (("dir", "in"), ("reason", "ok")) not in drops           # forwarded packets are no drops
    assert drops[(("dir", "in"), ("reason", "auth-failed"))] == 0   # every inbound reason from zero
    assert samples(m["ipsecgw_ike_messages"], "_total") == {(("dir", "in"), ("exchange", "IKE_SA_INIT")): 1}
    assert samples(m["ipsecgw_negotiation_failures"], "_total") == {(("reason", "NO_PROPOSAL_CHOSEN"),): 1}
    assert samples(m["ipsecgw_fastpath_up"]) == {(): 1}
    (info,) = m["ipsecgw_info"].samples      # the text format has no info type: a gauge of 1
    assert info.name == "ipsecgw_info" and info.value == 1
    assert info.labels == {"version": "9.9.9", "io": "kernel", "engine_configured": "best", "engine_used": "ipsec-mb",
                           "engines_present": "ipsec-mb,openssl"}


def test_series_of_a_dead_sa_are_gone(tmp_path: Path) -> None:
    d, view = fake_daemon(tmp_path), FakeView()
    assert "0xc0ffee02" in scrape(d, view)["text"]
    d.children = d.children[:1]                 # net6 deleted
    d.region = SimpleNamespace(fastpath_alive=lambda: False)
    m = scrape(d, view)
    assert "0xc0ffee02" not in m["text"] and "0x00000012" not in m["text"]
    assert {dict(k)["child"] for k in samples(m["ipsecgw_sa_packets"], "_total")} == {"net"}
    assert samples(m["ipsecgw_child_sas"])[(("state", "INSTALLED"),)] == 1
    assert samples(m["ipsecgw_fastpath_up"]) == {(): 0}
    d.children = []
    assert samples(scrape(d, view)["ipsecgw_sa_packets"], "_total") == {}


def test_drops_without_a_totals_file_are_the_sas_own(tmp_path: Path) -> None:
    d, view = fake_daemon(tmp_path), FakeView()        # no totals file (io: dpdk writes its own)
    assert samples(scrape(d, view)["ipsecgw_drops"], "_total") == {(("dir", "in"), ("reason", "auth-failed")): 2}


# -- the HTTP thread and the loop -----------------------------------------------------------------------------


def test_server_thread_takes_its_snapshot_on_the_loop(tmp_path: Path) -> None:
    d, view = fake_daemon(tmp_path), FakeView()
    srv = MetricsServer(d, view, ("127.0.0.1", 0))      # type: ignore[arg-type]

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    async def main() -> list[tuple[int, str]]:
        srv.started()
        loop = asyncio.get_running_loop()
        try:
            out = [await loop.run_in_executor(None, get)]
            view.fail = True
            out.append(await loop.run_in_executor(None, get))
            view.fail = False
            out.append(await loop.run_in_executor(None, get))
            return out
        finally:
            srv.stopping()

    (s1, body1), (s2, _), (s3, body3) = asyncio.run(main())
    assert (s1, s2, s3) == (200, 500, 200)
    names = {f.name for f in text_string_to_metric_families(body1)}
    assert {"ipsecgw_sa_packets", "ipsecgw_ike_sas", "ipsecgw_info", "process_resident_memory_bytes",
            "python_info"} <= names
    assert "0xc0ffee01" in body3


def test_bind_failure_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = MetricsServer(fake_daemon(tmp_path), FakeView(), ("127.0.0.1", taken.getsockname()[1]))  # type: ignore

        async def main() -> None:
            srv.started()

        with pytest.raises(OSError, match=r"cannot serve /metrics on 127\.0\.0\.1:\d+: Address already in use"):
            asyncio.run(main())


def test_dashboard_queries_name_only_exposed_series(tmp_path: Path) -> None:
    import json
    import re

    from prometheus_client import ProcessCollector

    dash = json.loads((Path(__file__).resolve().parents[2] / "docs/grafana/ipsecgw-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs.append(dash["templating"]["list"][1]["definition"])
    d, view = fake_daemon(tmp_path), FakeView()
    write_status(d.gw.shm_path, Totals(), 0.0)
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    reg.register(GatewayCollector(lambda: take_snapshot(d, view, "9.9.9")))
    exposed = {s.name for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples}
    used = {n for e in exprs for n in re.findall(r"\b((?:ipsecgw|process)_[a-z_]+)", e)}
    assert len(used) >= 10 and used <= exposed, sorted(used - exposed)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_status_text_shows_the_counts() -> None:
    from control.ike_counts import status_lines

    c = IkeCounts()
    assert status_lines(c.as_json()) == ["IKE messages: in 0, out 0; failed negotiations: none"]
    c.received(full_init(), natt=False)
    c.sent(ike_message(ExchangeType.IKE_SA_INIT, response=True), natt=False)
    c.sent(ike_message(ExchangeType.IKE_AUTH), natt=False)
    c.event(ChildSaFailed("net", Notify.TS_UNACCEPTABLE, "x"))
    assert status_lines(c.as_json()) == ["IKE messages: in 1 (IKE_SA_INIT 1), out 2 (IKE_AUTH 1, IKE_SA_INIT 1); "
                                         "failed negotiations: TS_UNACCEPTABLE 1"]
    assert status_lines(None) == []
