"""Sans-IO IKE_SA_INIT + IKE_AUTH between two of our own IKE SAs, in process.

A tiny simulated network moves datagrams between an initiator and a responder
(optionally through a NAT that rewrites the initiator's address and port), and
the CHILD SAs both ends derive are checked with a real ESP engine: a packet
encrypted on one side's outbound SA must decrypt on the other side's inbound SA.
"""

from __future__ import annotations

import ipaddress
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ike_pair import I_ADDR, NAT_PUBLIC, R_ADDR, Pair, assert_esp_works, child, configs, handshake

from control.ike.config import Identity
from control.ike.constants import NON_ESP_MARKER, ExchangeType, Notify
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed, State
from control.ike.sa import IkeSA
from control.ike.ts_payload import TrafficSelectorEntry as TS


@pytest.mark.parametrize("ike,esp", [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
    ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn"),
    ("aes256-sha384-ecp384", "aes256-sha256"),
    ("aes128-sha256-modp2048", "aes128-sha512"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("aes256gcm16-prfsha256-ecp521", "aes256-sha384"),
])
def test_handshake_and_child_keys(ike: str, esp: str) -> None:
    net = handshake(*configs(ike, esp_i=esp))
    (ei,), (er,) = net.of("a", IkeSaEstablished), net.of("b", IkeSaEstablished)
    assert (ei.spi_i, ei.spi_r) == (er.spi_i, er.spi_r) and ei.suite == er.suite
    assert str(ei.remote_id) == "gw-b.example" and str(er.remote_id) == "gw-a.example"
    assert not (ei.nat_local or ei.nat_remote or er.nat_local or er.nat_remote)
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert ci.suite == cr.suite and ci.suite.esn == esp.endswith("esn")
    assert ci.inbound.enc_key == cr.outbound.enc_key and ci.outbound.enc_key == cr.inbound.enc_key
    assert ci.inbound.enc_key != ci.outbound.enc_key
    assert not ci.outbound.udp_encap
    assert net.i.state == net.r.state == State.ESTABLISHED
    assert "aes" in repr(ci) or "chacha" in repr(ci)
    assert ci.inbound.enc_key.hex() not in repr(ci)
    assert_esp_works(ci, cr)
    # both IKE_SA_INIT and IKE_AUTH used one request each: Message IDs 0 and 1
    assert net.sent == {"a": 2, "b": 2}


def test_nat_detected_and_float_to_4500() -> None:
    net = handshake(*configs(), nat=True)
    (ei,), (er,) = net.of("a", IkeSaEstablished), net.of("b", IkeSaEstablished)
    assert ei.nat_local and not ei.nat_remote
    assert er.nat_remote and not er.nat_local
    # IKE_AUTH went over the NAT-T port with the non-ESP marker
    assert net.wire[2].startswith(NON_ESP_MARKER) and net.wire[3].startswith(NON_ESP_MARKER)
    assert not net.wire[0].startswith(NON_ESP_MARKER)
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert ci.outbound.udp_encap and cr.outbound.udp_encap
    assert (ci.outbound.sport, ci.outbound.dport) == (4500, 4500)
    assert (cr.outbound.sport, cr.outbound.dport) == (4500, 40000 + 4500)   # the NAT's port
    assert cr.outbound.dst == ipaddress.ip_address(NAT_PUBLIC)


def test_encap_fakes_nat() -> None:
    net = handshake(*configs(encap=True))
    (ei,), (er,) = net.of("a", IkeSaEstablished), net.of("b", IkeSaEstablished)
    assert ei.nat_local and er.nat_remote
    assert net.of("a", ChildSaEstablished)[0].outbound.udp_encap


def test_invalid_ke_retry() -> None:
    # the initiator guesses x25519 first; the responder only takes ECP-256
    net = handshake(*configs("aes128gcm16-prfsha256-x25519-ecp256", ike_r="aes128gcm16-prfsha256-ecp256"))
    (ei,) = net.of("a", IkeSaEstablished)
    assert ei.suite.dh == 19
    assert net.sent["a"] == 3          # INIT, INIT again with the right KE, AUTH
    assert not net.of("b", IkeSaFailed)   # the refused first attempt is no failure
    assert_esp_works(net.of("a", ChildSaEstablished)[0], net.of("b", ChildSaEstablished)[0])


def test_invalid_ke_for_unoffered_group_fails() -> None:
    net = handshake(*configs("aes128gcm16-prfsha256-x25519", ike_r="aes128gcm16-prfsha256-x25519-ecp256"))
    assert net.of("a", IkeSaEstablished)      # responder accepts the KE it got
    net = handshake(*configs("aes128gcm16-prfsha256-x25519", ike_r="aes128gcm16-prfsha256-ecp256"))
    (f,) = net.of("a", IkeSaFailed)
    assert f.notify == Notify.NO_PROPOSAL_CHOSEN


def test_wrong_psk() -> None:
    net = handshake(*configs(psk_r=b"another secret"))
    (fr,) = net.of("b", IkeSaFailed)
    (fi,) = net.of("a", IkeSaFailed)
    assert fr.notify == fi.notify == Notify.AUTHENTICATION_FAILED
    assert not net.of("a", ChildSaEstablished) and not net.of("b", IkeSaEstablished)
    assert net.i.state == State.DEAD


def test_wrong_identity() -> None:
    ci, cr = configs()
    cr.remote_id = Identity.from_string("someone-else.example")
    net = handshake(ci, cr)
    assert net.of("b", IkeSaFailed)[0].notify == Notify.AUTHENTICATION_FAILED
    assert net.of("a", IkeSaFailed)[0].notify == Notify.AUTHENTICATION_FAILED


def test_no_esp_proposal_keeps_ike_sa() -> None:
    net = handshake(*configs(esp_i="aes128gcm16", esp_r="aes256-sha256"))
    assert net.of("a", IkeSaEstablished) and net.of("b", IkeSaEstablished)
    assert net.of("a", ChildSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN
    assert net.of("b", ChildSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN


def test_ts_narrowing() -> None:
    # initiator asks for 10.0.0.0/8 <-> anything; responder allows 10.1.0.0/16 <-> 10.2.0.0/24 (+ 192.0.2.0/24)
    i_child = child(local="10.0.0.0/8", remote="0.0.0.0/0")
    r_child = child(local="10.2.0.0/24,192.0.2.0/24", remote="10.1.0.0/16")
    net = handshake(*configs(i_child=i_child, r_child=r_child))
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert ci.local_ts == [TS.from_network("10.1.0.0/16")]
    assert ci.remote_ts == [TS.from_network("10.2.0.0/24"), TS.from_network("192.0.2.0/24")]
    assert cr.local_ts == ci.remote_ts and cr.remote_ts == ci.local_ts
    assert_esp_works(ci, cr)


def test_ts_unacceptable() -> None:
    r_child = child(local="172.16.0.0/12", remote="10.1.0.0/16")
    net = handshake(*configs(r_child=r_child))
    assert net.of("a", IkeSaEstablished)
    assert net.of("a", ChildSaFailed)[0].notify == Notify.TS_UNACCEPTABLE


def test_proposal_mismatch() -> None:
    net = handshake(*configs("aes128gcm16-prfsha256-x25519", ike_r="aes256-sha384-ecp384"))
    assert net.of("a", IkeSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN
    assert net.of("b", IkeSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN


def test_retransmission_of_lost_response() -> None:
    # lose the first IKE_AUTH response: the initiator retransmits, the responder answers from its cache
    net = handshake(*configs(), drop=lambda side, n, data: side == "b" and n == 1)
    assert net.of("a", ChildSaEstablished) and len(net.of("b", ChildSaEstablished)) == 1
    assert net.i.stats["retransmits"] == 1 and net.r.stats["retransmitted_requests"] == 1
    assert net.now == pytest.approx(2.0)


def test_gives_up_after_retries() -> None:
    ci, cr = configs()
    net = handshake(ci, cr, drop=lambda side, n, data: side == "a")
    (f,) = net.of("a", IkeSaFailed)
    assert "no response to IKE_SA_INIT" in f.reason
    assert net.sent["a"] == ci.retransmit_tries + 1
    expected = sum(ci.retransmit_timeout * ci.retransmit_base ** k for k in range(ci.retransmit_tries + 1))
    assert net.now == pytest.approx(expected)


def test_tampered_and_replayed_messages_are_dropped() -> None:
    ci, cr = configs()
    net = Pair(ci, cr)
    net.i.initiate(0)
    net.run(initiator_clock=True)
    r, i = net.r, net.i
    auth_req = net.wire[2]
    # a replayed IKE_AUTH request is answered from the cache, not processed again
    r.receive_datagram(auth_req, 500, I_ADDR, 1.0)
    assert r.datagrams_to_send() and r.stats["retransmitted_requests"] == 1
    assert len(net.of("b", ChildSaEstablished)) == 1 and r.next_event() is None
    # a modified copy with the same Message ID is not
    bad = bytearray(auth_req)
    bad[-1] ^= 1
    r.receive_datagram(bytes(bad), 500, I_ADDR, 1.0)
    assert not r.datagrams_to_send() and r.stats["unexpected_request"] == 1
    # garbage, wrong SPIs and stray responses are counted, never raised
    i.receive_datagram(b"\x00" * 10, 500, R_ADDR, 1.0)
    i.receive_datagram(os.urandom(8) + auth_req[8:], 500, R_ADDR, 1.0)
    assert i.stats["malformed"] == 1 and i.stats["invalid_message_id"] == 1
    assert i.state == r.state == State.ESTABLISHED


def test_initiate_queues_the_exchanges() -> None:
    ci, _ = configs()
    sa = IkeSA(ci, initiator=True, local=I_ADDR, remote=R_ADDR)
    sa.initiate(0.0)
    (d,) = sa.datagrams_to_send()
    assert d.local_port == 500 and d.remote == R_ADDR
    assert sa.get_timer() == pytest.approx(ci.retransmit_timeout)
    with pytest.raises(RuntimeError):
        sa.initiate(0.0)
    from control.ike.message import Message
    m = Message.parse(d.data)
    assert m.exchange == ExchangeType.IKE_SA_INIT and m.message_id == 0 and m.spi_r == bytes(8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_state_machine(data) -> None:
    """Random and mutated datagrams at both ends during a handshake never raise."""
    rng = random.Random(data.draw(st.integers(0, 2**32)))

    def corrupt(side, n, raw):
        if rng.random() < 0.3:
            return True
        return False

    ci, cr = configs()
    net = Pair(ci, cr, drop=corrupt)
    net.i.initiate(0.0)
    for _ in range(6):
        net.run(max_steps=6, initiator_clock=True)
        for target in [net.i] + net.sas["b"]:
            kind = data.draw(st.sampled_from(["random", "mutate", "none"]))
            if kind == "random":
                blob = data.draw(st.binary(max_size=300))
            elif kind == "mutate" and net.wire:
                blob = bytearray(rng.choice(net.wire))
                for _ in range(rng.randint(1, 4)):
                    blob[rng.randrange(len(blob))] = rng.randrange(256)
                blob = bytes(blob)
            else:
                continue
            port = rng.choice([500, 4500])
            target.receive_datagram(blob, port, (rng.choice([I_ADDR[0], R_ADDR[0]]), port), net.now)
            target.handle_timer(net.now + rng.random() * 10)
    net.run(initiator_clock=True)


def test_initiator_follows_cookie() -> None:
    from control.ike.constants import Flag
    from control.ike.message import Message
    from control.ike.payloads import NoncePayload, NotifyPayload

    ci, cr = configs()
    i = IkeSA(ci, initiator=True, local=I_ADDR, remote=R_ADDR)
    i.initiate(0.0)
    (d,) = i.datagrams_to_send()
    first = Message.parse(d.data)
    # a responder under load answers with a COOKIE and keeps no state (RFC 7296 §2.6)
    cookie = Message(first.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, Flag.RESPONSE, 0,
                     [NotifyPayload(Notify.COOKIE, b"\xc0" * 16)]).serialize()
    i.receive_datagram(cookie, 500, R_ADDR, 0.1)
    (d2,) = i.datagrams_to_send()
    again = Message.parse(d2.data)
    assert isinstance(again.payloads[0], NotifyPayload) and again.payloads[0].data == b"\xc0" * 16
    assert again.message_id == 0 and again.spi_i == first.spi_i
    assert again.get(NoncePayload) == first.get(NoncePayload)
    # the retried request is the one AUTH signs: the handshake completes with a real responder
    r = IkeSA(cr, initiator=False, local=R_ADDR, remote=I_ADDR)
    pending = [("r", d2)]
    while pending:
        side, dg = pending.pop(0)
        if side == "r":
            r.receive_datagram(dg.data, dg.remote[1], (I_ADDR[0], dg.local_port), 0.2)
            pending += [("i", x) for x in r.datagrams_to_send()]
        else:
            i.receive_datagram(dg.data, dg.remote[1], (R_ADDR[0], dg.local_port), 0.2)
            pending += [("r", x) for x in i.datagrams_to_send()]
    assert i.state == r.state == State.ESTABLISHED


def test_responder_picks_a_later_proposal() -> None:
    """The responder accepts our second ESP proposal; its answer keeps number 2 and we take it."""
    net = handshake(*configs(esp_i="aes256gcm16,aes128gcm16", esp_r="aes128gcm16"))
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert ci.suite == cr.suite and ci.outbound.enc == "aes-gcm-128"
    assert net.i.state == net.r.state == State.ESTABLISHED
    assert_esp_works(ci, cr)
