"""The daemon's one UDP path into IKE state (control/ike_intake.py): new IKE_SA_INIT requests pass the
responder gate before an IkeSA exists, a retransmission finds the half-open SA it made, and the cookie
gate of RFC 7296 §2.6 plugs into the same place (``AdmissionGate(cookies=...)``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.daemon_harness import gateway_yaml
from support.ike_messages import full_init, with_cookie
from support.intake_host import IntakeHost

from control.config import Config, load_config
from control.ike.constants import Notify
from control.ike.cookie import ResponderGate
from control.ike.message import Message
from control.ike_intake import IkeIntake
from control.ike_sa_table import IkeSaTable
from control.responder_gate import AdmissionGate

LOCAL, PEER = "198.51.100.1", ("198.51.100.2", 500)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(gateway_yaml(shm=tmp_path / "gw.shm", sock=tmp_path / "gw.sock", ike_port=500, natt_port=4500,
                                local=LOCAL, remote=PEER[0], remote_port=500, remote_natt_port=4500,
                                local_id="gw-a.example", remote_id="gw-b.example", local_ts="10.1.0.0/16",
                                remote_ts="10.2.0.0/16", start_action="none", export_keys=False))
    return load_config(cfg)


def init_request(spi: bytes | None = None) -> bytes:
    return full_init(spi)


def intake(config: Config, gate: AdmissionGate) -> tuple[IkeIntake, IntakeHost, IkeSaTable]:
    host, table = IntakeHost(), IkeSaTable()
    return IkeIntake(host, config, table, gate), host, table


def test_new_request_makes_one_half_open_sa_and_its_retransmission_finds_it(config: Config) -> None:
    gate = AdmissionGate()
    it, host, table = intake(config, gate)
    req = init_request()
    it.received(req, LOCAL, 500, PEER)
    it.received(req, LOCAL, 500, PEER)
    assert len(table) == 1 and len(gate) == 1
    assert host.processed == [table.values()[0]] * 2
    gate.closed(table.values()[0].spi)
    assert len(gate) == 0


def test_half_open_cap_refuses_before_any_state(config: Config) -> None:
    it, host, table = intake(config, AdmissionGate(max_half_open=1))
    it.received(init_request(), LOCAL, 500, PEER)
    it.received(init_request(), LOCAL, 500, PEER)
    assert len(table) == 1
    assert host.counts == {"half_open_full": 1}          # once, by its reason


def test_unknown_peer_and_non_ike_are_counted_not_answered(config: Config) -> None:
    it, host, table = intake(config, AdmissionGate())
    it.received(init_request(), LOCAL, 500, ("203.0.113.9", 500))
    it.received(b"\xff", LOCAL, 4500, PEER)
    it.received(bytes(8), LOCAL, 500, PEER)
    it.received(b"IPSGPROB" + bytes(range(8)), LOCAL, 4500, (LOCAL, 40000))   # the fastpath's steering probe
    it.received(b"IPSGPROB" + bytes(3), LOCAL, 4500, PEER)                    # not the probe's shape
    it.received(b"\x00\x00\x00\x01" + bytes(20), LOCAL, 4500, PEER)          # ESP-in-UDP that reached control
    assert len(table) == 0 and not host.sent
    assert host.counts == {"no_connection": 1, "natt_keepalive": 1, "short_datagrams": 1,
                           "natt_steering_probe": 1, "natt_non_ike": 2}


def test_cookie_gate_plugs_in_front_of_ike_state(config: Config) -> None:
    it, host, table = intake(config, AdmissionGate(cookies=ResponderGate(cookie_threshold=0)))
    req = init_request(spi=bytes(range(8)))
    it.received(req, LOCAL, 500, PEER)
    assert len(table) == 0 and host.counts == {"cookie_gate": 1}
    (reply,), (src,) = host.sent, host.sent_from
    (n,) = Message.parse(reply.data).notifies()
    assert src == LOCAL and reply.remote == PEER and n.notify_type == Notify.COOKIE
    it.received(with_cookie(req, n.data), LOCAL, 500, PEER)
    assert len(table) == 1 and len(host.sent) == 1


def test_a_refused_or_unmatched_datagram_is_counted_once(config: Config) -> None:
    """A refused IKE_SA_INIT counts only its reason; a datagram for no IKE SA only unknown_spi."""
    it, host, table = intake(config, AdmissionGate())
    bad = init_request()[:-1]                                   # the header's length says one byte more
    it.received(bad, LOCAL, 500, PEER)
    auth = bytearray(init_request())
    auth[18] = 35                                               # IKE_AUTH with a zero responder SPI
    it.received(bytes(auth), LOCAL, 500, PEER)
    assert len(table) == 0 and host.counts == {"init_bad_chain": 1, "unknown_spi": 1}
