"""The responder's front door: stateless COOKIEs under load (RFC 7296 §2.6), bounded half-open state,
and INVALID_MAJOR_VERSION answered before any state exists."""

from __future__ import annotations

import asyncio
import os

from support.ike_messages import init_request
from support.ike_pair import cfgs

from control.ike.constants import Notify
from control.ike.cookie import ResponderGate
from control.ike.events import State
from control.ike.message import Message
from control.ike.sa import IkeSA
from control.ike_udp import IkeUdpEndpoint

A, B = ("192.0.2.1", 500), ("198.51.100.2", 500)


def test_cookie_only_under_load() -> None:
    gate = ResponderGate(cookie_threshold=2, max_half_open=10)
    assert gate.check(init_request(), 500, A, 0.0, half_open=1) == (True, None)
    ok, reply = gate.check(init_request(), 500, A, 0.0, half_open=2)
    assert not ok
    m = Message.parse(reply.data)
    (n,) = m.notifies()
    assert n.notify_type == Notify.COOKIE and len(n.data) == 17 and m.spi_r == bytes(8) and m.is_response
    assert gate.stats == {"accepted": 1, "cookie_sent": 1}


def test_cookie_round_trip_with_our_initiator() -> None:
    gate = ResponderGate(cookie_threshold=0)
    ca, cb = cfgs()
    i = IkeSA(ca, initiator=True, local=A, remote=B)
    i.initiate(0.0)
    ok, reply = gate.check(i.datagrams_to_send()[0].data, 500, A, 0.0, half_open=0)
    assert not ok
    i.receive_datagram(reply.data, 500, B, 0.1)
    (again,) = i.datagrams_to_send()
    ok, reply = gate.check(again.data, 500, A, 0.2, half_open=0)
    assert ok and reply is None and gate.stats["cookie_accepted"] == 1
    # the request that got in completes the handshake on a fresh responder SA
    r = IkeSA(cb, initiator=False, local=B, remote=A)
    pending = [("r", again)]
    while pending:
        side, d = pending.pop(0)
        target, src = (r, A) if side == "r" else (i, B)
        target.receive_datagram(d.data, d.remote[1], (src[0], d.local_port), 0.3)
        pending += [("i" if side == "r" else "r", x) for x in target.datagrams_to_send()]
    assert i.state == r.state == State.ESTABLISHED


def test_cookie_binding_and_rotation() -> None:
    gate = ResponderGate(cookie_threshold=0, secret_lifetime=10.0)
    spi, nonce = os.urandom(8), os.urandom(32)
    _, reply = gate.check(init_request(spi, nonce=nonce), 500, A, 1.0, half_open=0)
    cookie = Message.parse(reply.data).notifies()[0].data
    # bound to the initiator's address, SPI and nonce
    assert not gate.check(init_request(spi, cookie, nonce), 500, ("192.0.2.99", 500), 2.0, 0)[0]
    assert not gate.check(init_request(os.urandom(8), cookie, nonce), 500, A, 2.0, 0)[0]
    assert not gate.check(init_request(spi, cookie, os.urandom(32)), 500, A, 2.0, 0)[0]
    forged = cookie[:1] + bytes(16)
    assert not gate.check(init_request(spi, forged, nonce), 500, A, 2.0, 0)[0]
    assert gate.stats["cookie_invalid"] == 4
    # still good after one rotation, not after two
    assert gate.check(init_request(spi, cookie, nonce), 500, A, 15.0, 0)[0]
    assert not gate.check(init_request(spi, cookie, nonce), 500, A, 25.0, 0)[0]


def test_gate_drops_at_the_bound_and_answers_versions() -> None:
    gate = ResponderGate(cookie_threshold=1, max_half_open=3)
    assert gate.check(init_request(), 500, A, 0.0, half_open=3) == (False, None)
    assert gate.stats["half_open_limit"] == 1
    req = init_request()
    ok, reply = gate.check(req[:17] + b"\x30" + req[18:], 4500, A, 0.0, 0)
    assert not ok and reply is None          # NAT-T port without the non-ESP marker: not IKE
    ok, reply = gate.check(b"\0\0\0\0" + req[:17] + b"\x30" + req[18:], 4500, A, 0.0, 0)
    assert reply.data.startswith(b"\0\0\0\0")
    assert Message.parse(reply.data[4:]).notifies()[0].notify_type == Notify.INVALID_MAJOR_VERSION
    assert not gate.check(bytes(40), 500, A, 0.0, 0)[0] and gate.stats["malformed"] == 1


class _Capture(IkeUdpEndpoint):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list = []

    def send_raw(self, data, local_port, remote):
        self.sent.append((data, local_port, remote))


def test_flood_of_spoofed_init_requests_keeps_half_open_bounded() -> None:
    """600 IKE_SA_INIT requests from as many spoofed addresses: the endpoint switches to cookies at
    the threshold, never holds more half-open SAs than that, and answers the rest statelessly."""
    ca, cb = cfgs()

    async def flood():
        gate = ResponderGate(cookie_threshold=20, max_half_open=100)
        ep = _Capture("127.0.0.1", (500, 4500), responder_config=cb, gate=gate)
        ep._loop = asyncio.get_running_loop()
        for n in range(600):
            src = (f"10.{n >> 8 & 255}.{n & 255}.1", 500)
            i = IkeSA(ca, initiator=True, local=src, remote=B)
            i.initiate(0.0)
            ep._received(i.datagrams_to_send()[0].data, 500, src)
        return ep, gate

    ep, gate = asyncio.run(flood())
    assert ep.half_open() == 20 and len(ep.sas) == 20
    assert gate.stats["accepted"] == 20 and gate.stats["cookie_sent"] == 580
    cookies = [d for d, _, _ in ep.sent if Message.parse(d).notifies(Notify.COOKIE)]
    assert len(cookies) == 580
    assert all(len(d) < 80 for d in cookies)        # small answers: no amplification
