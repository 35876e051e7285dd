"""The ISAKMP codec (control.ikev1.codec): round trips of every payload, malformed input (a DecodeError
and nothing else, at every truncation and under random corruption), and scapy's independent ISAKMP
dissector (scapy.layers.isakmp) reading what we encode and building what we parse."""

from __future__ import annotations

import random

import pytest
from scapy.layers.isakmp import (
    ISAKMP,
    ISAKMP_payload_Hash,
    ISAKMP_payload_ID,
    ISAKMP_payload_KE,
    ISAKMP_payload_Nonce,
    ISAKMP_payload_Proposal,
    ISAKMP_payload_SA,
    ISAKMP_payload_Transform,
    ISAKMP_payload_VendorID,
)
from support.ikev1_pair import configs

from control.ikev1.codec import (
    CertPayload,
    DecodeError,
    DeletePayload,
    IDPayload,
    NotifyPayload,
    Payload,
    Proposal,
    SAPayload,
    Transform,
    decode_attrs,
    decode_message,
    encode_attrs,
    encode_plain,
)
from control.ikev1.constants import Exchange, P1Attr, PayloadType, Protocol
from control.ikev1.sa import Ikev1SA

CI, CR = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")


def _all_payloads() -> list:
    sa = SAPayload([Proposal(1, Protocol.ISAKMP, b"", [
        Transform(1, 1, [(P1Attr.ENCR, 7), (P1Attr.KEY_LENGTH, 256),
                         (P1Attr.LIFE_DURATION, (86400 * 365).to_bytes(4, "big"))]),
        Transform(2, 1, [(P1Attr.ENCR, 7), (P1Attr.HASH, 2)])]),
        Proposal(2, Protocol.ESP, b"\x00\x00\x12\x34", [Transform(1, 12, [(6, 128)])])])
    return [sa, Payload(PayloadType.KE, b"k" * 256), Payload(PayloadType.NONCE, b"n" * 32),
            IDPayload(2, b"gw-a.example", 17, 500), CertPayload(4, b"der-cert"),
            CertPayload(4, b"ca-dn", PayloadType.CERTREQ), Payload(PayloadType.HASH, b"h" * 32),
            Payload(PayloadType.SIG, b"s" * 64), NotifyPayload(24578, 1, CI + CR, b""),
            DeletePayload(Protocol.ESP, [b"\x00\x00\x12\x34", b"\x00\x00\x56\x78"]),
            Payload(PayloadType.VID, b"v" * 16), Payload(PayloadType.NAT_D, b"d" * 32)]


def test_every_payload_round_trips() -> None:
    payloads = _all_payloads()
    data = encode_plain(CI, CR, Exchange.MAIN, 0, payloads)
    msg = decode_message(data)
    assert (msg.header.cookie_i, msg.header.cookie_r, msg.header.exchange) == (CI, CR, Exchange.MAIN)
    assert msg.payloads == payloads
    # raw keeps each payload as sent (HASH is computed over it)
    assert b"".join(p.raw for p in msg.payloads) == data[28:]
    assert encode_plain(CI, CR, Exchange.MAIN, 0, msg.payloads) == data


def test_attributes_basic_and_variable() -> None:
    attrs = [(1, 7), (14, 256), (12, 0x10000), (16, b"\x01\x02\x03")]
    enc = encode_attrs(attrs)
    assert enc[:4] == b"\x80\x01\x00\x07"          # TV: AF bit set
    assert enc[8:12] == b"\x00\x0c\x00\x04"        # a value over 16 bits goes TLV
    assert decode_attrs(enc) == [(1, 7), (14, 256), (12, b"\x00\x01\x00\x00"), (16, b"\x01\x02\x03")]


def _mm1() -> bytes:
    sa = Ikev1SA(configs()[0], initiator=True, local=("192.0.2.1", 500), remote=("192.0.2.2", 500))
    sa.initiate(0.0)
    return sa.datagrams_to_send()[0].data


def test_every_truncation_is_a_decode_error() -> None:
    full = encode_plain(CI, CR, Exchange.MAIN, 0, _all_payloads())
    for n in range(len(full)):
        cut = full[:n]
        with pytest.raises(DecodeError):
            decode_message(cut)
        # the header's length fixed up to the cut: the payload chain itself is short
        if n >= 28:
            with pytest.raises(DecodeError):
                decode_message(cut[:24] + n.to_bytes(4, "big") + cut[28:])


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: d[:16] + b"\x63" + d[17:], "unknown payload type 99"),
    (lambda d: d[:17] + b"\x20" + d[18:], "major version 2"),
    (lambda d: d[:19] + b"\x80" + d[20:], "unknown header flags"),
    (lambda d: bytes(8) + d[8:], "initiator cookie is zero"),
    (lambda d: d + b"\0", "header length"),
    (lambda d: d[:24] + (len(d) + 4).to_bytes(4, "big") + d[28:] + b"\0\0\0\0", "bytes after the last payload"),
    (lambda d: d[:30] + b"\xff\xff" + d[32:], "does not fit the message"),
])
def test_malformed_messages_say_why(mutate, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_message(mutate(_mm1()))


def test_bad_sa_and_delete_bodies() -> None:
    with pytest.raises(DecodeError, match="transform count"):
        SAPayload.decode(1, SAPayload([Proposal(1, 1, b"", [Transform(1, 1, [])])]).body()[:8 + 4 + 3] + b"\x02"
                         + SAPayload([Proposal(1, 1, b"", [Transform(1, 1, [])])]).body()[16:])
    with pytest.raises(DecodeError, match="SPI count"):
        DeletePayload.decode(12, DeletePayload(3, [b"\0\0\1\0"]).body() + b"\0")
    with pytest.raises(DecodeError, match="without a proposal|shorter"):
        SAPayload.decode(1, b"\0\0\0\1")


def test_random_corruption_raises_only_decode_errors() -> None:
    rng = random.Random(18)
    base = encode_plain(CI, CR, Exchange.MAIN, 0, _all_payloads())
    parsed = 0
    for _ in range(3000):
        d = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        try:
            decode_message(bytes(d))
            parsed += 1
        except DecodeError:
            pass
    assert 0 < parsed < 3000        # some corruptions hit only data bytes, most break a length or a type


def test_corrupted_input_to_a_responder_takes_no_state() -> None:
    rng = random.Random(1)
    mm1 = _mm1()
    for _ in range(300):
        d = bytearray(mm1)
        d[rng.randrange(28, len(d))] ^= 1 << rng.randrange(8)
        r = Ikev1SA(configs()[1], initiator=False, local=("192.0.2.2", 500), remote=("192.0.2.1", 500))
        r.receive_datagram(bytes(d), ("192.0.2.1", 500), 0.0, local_port=500)
        if r.state == "created":
            assert r.cookie_i == b"" and r.datagrams_to_send() == [] and r.stats["dropped"] == 1


# -- scapy, an independent ISAKMP implementation ----------------------------------------------------------

def test_scapy_dissects_our_main_mode_message_1() -> None:
    data = _mm1()
    pkt = ISAKMP(data)
    assert pkt.exch_type == 2 and pkt.version == 0x10 and pkt.length == len(data)
    sa = pkt[ISAKMP_payload_SA]
    assert sa.doi == 1 and sa.situation == 1
    prop = sa.prop
    assert prop.proto == 1 and prop.trans_nb == 1
    attrs = dict(prop.trans.transforms)
    assert attrs["Encryption"] == "AES-CBC" and attrs["KeyLength"] == 256 and attrs["Hash"] == "SHA2-256"
    assert attrs["Authentication"] == "PSK" and attrs["GroupDesc"] == "2048MODPgr" and attrs["LifeDuration"] == 10800
    assert pkt[ISAKMP_payload_VendorID].VendorID == bytes.fromhex("4a131c81070358455c5728f20e95452f")


def test_scapy_dissects_our_aggressive_mode_message_1() -> None:
    ci = configs(aggressive=True)[0]
    sa = Ikev1SA(ci, initiator=True, local=("192.0.2.1", 500), remote=("192.0.2.2", 500))
    sa.initiate(0.0)
    pkt = ISAKMP(sa.datagrams_to_send()[0].data)
    assert pkt.exch_type == 4 and pkt.init_cookie == sa.cookie_i
    assert pkt[ISAKMP_payload_KE].ke == sa.g_xi and pkt[ISAKMP_payload_Nonce].nonce == sa.nonce_i
    assert pkt[ISAKMP_payload_ID].IDtype == 2 and pkt[ISAKMP_payload_ID].IdentData == b"gw-a.example"


def test_scapy_built_message_parses_in_ours_and_a_responder_answers_it() -> None:
    trans = ISAKMP_payload_Transform(transform_count=1, transform_id=1, transforms=[
        ("Encryption", "AES-CBC"), ("KeyLength", 256), ("Hash", "SHA2-256"), ("Authentication", "PSK"),
        ("GroupDesc", "2048MODPgr"), ("LifeType", "Seconds"), ("LifeDuration", 3600)])
    prop = ISAKMP_payload_Proposal(trans_nb=1, trans=trans)
    pkt = ISAKMP(init_cookie=CI, exch_type=2) / ISAKMP_payload_SA(prop=prop) \
        / ISAKMP_payload_KE(ke=b"k" * 8) / ISAKMP_payload_Nonce(nonce=b"n" * 16) \
        / ISAKMP_payload_ID(IDtype=2, IdentData=b"peer.example") / ISAKMP_payload_Hash(hash=b"h" * 32)
    msg = decode_message(bytes(pkt))
    assert [p.type for p in msg.payloads] == [1, 4, 10, 5, 8]
    t = msg.payloads[0].proposals[0].transforms[0]
    assert (t.attr(P1Attr.ENCR), t.attr(P1Attr.KEY_LENGTH), t.attr(P1Attr.HASH), t.attr(P1Attr.GROUP)) == \
        (7, 256, 4, 14)
    assert msg.payloads[3].data == b"peer.example" and msg.payloads[4].data == b"h" * 32
    # scapy's main mode message 1 (SA alone) gets our message 2 with the transform chosen
    mm1 = ISAKMP(init_cookie=CI, exch_type=2) / ISAKMP_payload_SA(prop=ISAKMP_payload_Proposal(trans_nb=1, trans=trans))
    r = Ikev1SA(configs()[1], initiator=False, local=("192.0.2.2", 500), remote=("192.0.2.1", 500))
    r.receive_datagram(bytes(mm1), ("192.0.2.1", 500), 0.0, local_port=500)
    out = r.datagrams_to_send()
    assert len(out) == 1 and r.cookie_i == CI
    reply = ISAKMP(out[0].data)
    assert reply.init_cookie == CI and reply.resp_cookie == r.cookie_r
    assert dict(reply[ISAKMP_payload_SA].prop.trans.transforms)["LifeDuration"] == 3600
