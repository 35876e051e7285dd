"""AH CHILD SAs (RFC 4302) negotiated by two of our sans-IO IKE cores: protocol ID 2 proposals (integrity,
ESN, optional DH; no cipher) on the wire as RFC 7296 §3.3 lays them out (scapy's IKEv2 layer decodes
them), KEYMAT with integrity keys only (AES-GMAC: key + 4-byte salt, RFC 4543 §7) that the AH reference
session and scapy's AH both accept, rekey and Delete keeping AH, ESP/AH mismatches, and the NAT refusal."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.ikev2 import IKEv2_Proposal, IKEv2_SA, IKEv2_Transform
from support.ah import assert_ah_works
from support.ike_pair import Pair, child, configs, handshake, up

from cdefs.algorithms import AH_INTEG_ALGS
from control.ike import child_keying
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.constants import Esn, Integ, Notify, ProtocolId, TransformType
from control.ike.events import ChildSaDeleted, ChildSaEstablished, ChildSaFailed, IkeSaEstablished, State
from control.ike.proposals import ah_suite, parse_proposals, select_proposal
from control.ike.sa_payload import SAPayload
from control.ike.tasks import child_create, ike_auth
from control.ike.tasks.child_create import ChildCreateInitiator
from control.ike.tasks.child_delete import ChildDeleteInitiator
from control.ike.ts_payload import TrafficSelectorEntry as TS

KEYWORDS = {"sha1": ("hmac-sha1-96", Integ.HMAC_SHA1_96), "sha256": ("hmac-sha256-128", Integ.HMAC_SHA2_256_128),
            "sha384": ("hmac-sha384-192", Integ.HMAC_SHA2_384_192),
            "sha512": ("hmac-sha512-256", Integ.HMAC_SHA2_512_256),
            "aes128gmac": ("aes-gmac-128", Integ.AES_128_GMAC), "aes192gmac": ("aes-gmac-192", Integ.AES_192_GMAC),
            "aes256gmac": ("aes-gmac-256", Integ.AES_256_GMAC)}


def ah_configs(ah_i: str, ah_r: str | None = None, **kw) -> tuple[IkeConfig, IkeConfig]:
    return configs(i_child=child(ah=ah_i),
                   r_child=child(local="10.2.0.0/16", remote="10.1.0.0/16", ah=ah_r or ah_i), **kw)


def _scapy_transforms(prop) -> list[tuple[int, int, int | None]]:
    out, t = [], prop.trans
    while isinstance(t, IKEv2_Transform):
        out.append((t.transform_type, t.transform_id, t.key_length))
        t = t.payload
    return out


# -- proposals on the wire -----------------------------------------------------------------------

def test_ah_offer_bytes_decode_in_scapy_as_rfc7296_lays_them_out() -> None:
    """The SA payload of a real CREATE_CHILD_SA request for an AH child, read by scapy's IKEv2 layer."""
    p = up()
    sa = p.ike("a")
    task = ChildCreateInitiator(child("second", local="10.10.0.0/16", remote="10.20.0.0/16",
                                      ah="sha256-esn-x25519, aes256gmac-noesn"))
    payloads = task.build_request(sa)
    assert payloads is not None
    (sa_p,) = [x for x in payloads if isinstance(x, SAPayload)]
    body = sa_p.body()
    decoded = IKEv2_SA(struct.pack("!BBH", 0, 0, 4 + len(body)) + body)
    first = decoded.prop
    second = first.payload
    assert isinstance(first, IKEv2_Proposal) and isinstance(second, IKEv2_Proposal)
    for num, prop in ((1, first), (2, second)):
        assert prop.proposal == num and prop.proto == 2 and prop.SPIsize == 4
        assert int.from_bytes(prop.SPI, "big") == task.state.spi_in
    assert first.trans_nb == 3 and _scapy_transforms(first) == [(3, 12, None), (4, 31, None), (5, 1, None)]
    assert second.trans_nb == 2 and _scapy_transforms(second) == [(3, 11, None), (5, 0, None)]
    assert not any(t[0] == 1 for t in _scapy_transforms(first) + _scapy_transforms(second))   # no ENCR


def test_a_foreign_ah_proposal_is_parsed_and_chosen() -> None:
    """An AH offer scapy encodes (SHA-512 or SHA-1, ESN either way) parses here and selection answers
    with one transform per type, keeping the offer's number and SPI."""
    offer = IKEv2_SA(prop=IKEv2_Proposal(proposal=1, proto=2, SPIsize=4, SPI=b"\x00\x01\x02\x03", trans_nb=4,
                                         trans=IKEv2_Transform(transform_type=3, transform_id=14)
                                         / IKEv2_Transform(transform_type=3, transform_id=2)
                                         / IKEv2_Transform(transform_type=5, transform_id=1)
                                         / IKEv2_Transform(transform_type=5, transform_id=0)))
    parsed = SAPayload.parse_body(bytes(offer)[4:])
    ours = parse_proposals("sha1-esn", "ah")
    chosen = select_proposal(ours, parsed.proposals)
    assert chosen is not None and chosen.protocol == ProtocolId.AH and chosen.spi == b"\x00\x01\x02\x03"
    assert [(t.type, t.id) for t in chosen.transforms] == [(TransformType.INTEG, Integ.HMAC_SHA1_96),
                                                           (TransformType.ESN, Esn.YES)]
    assert ah_suite(chosen).integ == "hmac-sha1-96" and ah_suite(chosen).esn
    # the same transforms under protocol ESP are not an AH offer (and an ESP child does not take AH)
    assert select_proposal(ours, [type(p)(p.num, ProtocolId.ESP, p.spi, p.transforms) for p in parsed.proposals]) \
        is None
    assert select_proposal(parse_proposals("aes128-sha1", "esp"), parsed.proposals) is None


# -- negotiation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", list(KEYWORDS))
@pytest.mark.parametrize("esn", ["esn", "noesn"])
def test_ike_auth_negotiates_an_ah_child(kw: str, esn: str) -> None:
    name, _ = KEYWORDS[kw]
    net = handshake(*ah_configs(f"{kw}-{esn}"))
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    alg = AH_INTEG_ALGS[name]
    for ev in (ci, cr):
        assert ev.suite.proto == "ah" and ev.suite.integ == name and ev.suite.esn == (esn == "esn")
        for sa in (ev.inbound, ev.outbound):
            assert sa.proto == "ah" and sa.enc == "null" and sa.enc_key == b"" and sa.integ == name
            assert len(sa.integ_key) == alg.key_len and sa.esn == (esn == "esn") and not sa.udp_encap
    assert ci.inbound.integ_key == cr.outbound.integ_key and ci.outbound.integ_key == cr.inbound.integ_key
    assert ci.inbound.integ_key != ci.outbound.integ_key
    assert ci.inbound.integ_key.hex() not in repr(ci) and f"AH {name}" in repr(ci)
    assert_ah_works(ci, cr)


def test_responder_picks_its_acceptable_ah_proposal() -> None:
    net = handshake(*ah_configs("sha512, aes128gmac-esn", ah_r="aes128gmac-esn"))
    (ci,), (cr,) = net.of("a", ChildSaEstablished), net.of("b", ChildSaEstablished)
    assert ci.outbound.integ == cr.inbound.integ == "aes-gmac-128" and ci.outbound.esn
    assert len(ci.outbound.integ_key) == 20       # 16-byte AES key + 4-byte salt from KEYMAT
    assert_ah_works(ci, cr)


def _ah_up(ah: str = "sha256") -> Pair:
    """An IKE SA whose responder also knows an AH child "second" (10.10/16 <-> 10.20/16)."""
    ca = IkeConfig(Identity.from_string("a.example"), b"k" * 16, Identity.from_string("b.example"),
                   children=[child()])
    cb = IkeConfig(Identity.from_string("b.example"), b"k" * 16, Identity.from_string("a.example"),
                   children=[child(local="10.2.0.0/16", remote="10.1.0.0/16"),
                             child("second", local="10.20.0.0/16", remote="10.10.0.0/16", ah=ah)])
    p = Pair(ca, cb).run()
    assert p.ike("a").state == State.ESTABLISHED
    p.clear()
    return p


def _second(ah: str) -> ChildConfig:
    return child("second", local="10.10.0.0/16", remote="10.20.0.0/16", ah=ah)


@pytest.mark.parametrize("ah", ["sha384-x25519", "aes192gmac-esn-ecp256", "sha1-modp2048"])
def test_create_child_sa_with_pfs(ah: str) -> None:
    p = _ah_up(ah)
    p.ike("a").create_child(p.now, _second(ah))
    p.run()
    (ca,), (cb,) = p.of("a", ChildSaEstablished), p.of("b", ChildSaEstablished)
    assert ca.outbound.proto == "ah" and ca.suite.integ == KEYWORDS[ah.split("-")[0]][0]
    assert ca.outbound.esn == ("esn" in ah.split("-"))
    assert_ah_works(ca, cb)


def test_pfs_group_mismatch_is_refused() -> None:
    p = _ah_up("sha256-x25519")
    p.ike("a").create_child(p.now, _second("sha256-ecp384"))
    p.run()
    assert not p.of("a", ChildSaEstablished)
    (fa,) = p.of("a", ChildSaFailed)
    assert fa.notify == Notify.NO_PROPOSAL_CHOSEN and p.ike("a").state == State.ESTABLISHED


@pytest.mark.parametrize("side", ["a", "b"])
def test_rekey_keeps_ah_and_delete_names_ah(side: str) -> None:
    p = _ah_up("sha256-x25519")
    p.ike("a").create_child(p.now, _second("sha256-x25519"))
    p.run()
    (old_a,) = p.of("a", ChildSaEstablished)
    p.clear()
    other = "b" if side == "a" else "a"
    sa = p.ike(side)
    old = next(c for c in sa.children if c.config.name == "second")
    sa.rekey_child(p.now, old.spi_in)
    p.run()
    (new_s,), (new_o,) = p.of(side, ChildSaEstablished), p.of(other, ChildSaEstablished)
    assert new_s.rekey_of == old.spi_in and new_s.outbound.proto == new_o.outbound.proto == "ah"
    assert new_s.outbound.integ_key != (old_a.outbound.integ_key if side == "a" else old_a.inbound.integ_key)
    # the old pair was deleted on both sides by an AH Delete the peer understood
    assert [(d.spi_in, d.spi_out) for d in p.of(side, ChildSaDeleted)] == [(old.spi_in, old.spi_out)]
    assert [(d.spi_in, d.spi_out) for d in p.of(other, ChildSaDeleted)] == [(old.spi_out, old.spi_in)]
    assert p.ike("b").stats["delete_unsupported_protocol"] == p.ike("a").stats["delete_unsupported_protocol"] == 0
    assert_ah_works(new_s, new_o)


def test_delete_payloads_name_each_protocol() -> None:
    p = _ah_up()
    p.ike("a").create_child(p.now, _second("sha256"))
    p.run()
    sa = p.ike("a")
    esp_c = next(c for c in sa.children if c.config.name == "net")
    ah_c = next(c for c in sa.children if c.config.name == "second")
    payloads = ChildDeleteInitiator([esp_c.spi_in, ah_c.spi_in]).build_request(sa)
    assert payloads is not None
    assert [(d.protocol, d.spis) for d in payloads] == [(ProtocolId.ESP, [esp_c.spi_in.to_bytes(4, "big")]),
                                                        (ProtocolId.AH, [ah_c.spi_in.to_bytes(4, "big")])]
    # a real Delete of the AH child, on a fresh pair: the peer removes that one child
    p = _ah_up()
    p.ike("a").create_child(p.now, _second("sha256"))
    p.run()
    p.clear()
    ah_c = next(c for c in p.ike("a").children if c.config.name == "second")
    p.ike("a").delete_child(p.now, ah_c.spi_in)
    p.run()
    assert [d.name for d in p.of("b", ChildSaDeleted)] == ["second"]
    assert [c.config.name for c in p.ike("b").children] == ["net"]


# -- mismatches --------------------------------------------------------------------------------------

def test_ah_offer_to_an_esp_child_gets_no_proposal_chosen() -> None:
    ci, cr = configs(i_child=child(ah="sha256"), r_child=child(local="10.2.0.0/16", remote="10.1.0.0/16",
                                                                  esp="aes128-sha256"))
    net = handshake(ci, cr)
    assert net.of("a", IkeSaEstablished) and not net.of("a", ChildSaEstablished)
    (fa,), (fb,) = net.of("a", ChildSaFailed), net.of("b", ChildSaFailed)
    assert fa.notify == fb.notify == Notify.NO_PROPOSAL_CHOSEN and "ESP" in fb.reason


def test_esp_offer_to_an_ah_child_gets_no_proposal_chosen() -> None:
    ci, cr = configs(i_child=child(esp="aes128-sha256"), r_child=child(local="10.2.0.0/16", remote="10.1.0.0/16",
                                                                          ah="sha256"))
    net = handshake(ci, cr)
    assert net.of("a", IkeSaEstablished) and not net.of("b", ChildSaEstablished)
    (fa,), (fb,) = net.of("a", ChildSaFailed), net.of("b", ChildSaFailed)
    assert fa.notify == fb.notify == Notify.NO_PROPOSAL_CHOSEN and "AH" in fb.reason


def test_ah_algorithm_mismatch_gets_no_proposal_chosen() -> None:
    net = handshake(*ah_configs("sha256", ah_r="sha512-esn"))
    assert not net.of("a", ChildSaEstablished) and not net.of("b", ChildSaEstablished)
    assert net.of("a", ChildSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN


# -- NAT -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["nat", "encap"])
def test_initiator_does_not_offer_ah_behind_a_nat(how: str) -> None:
    ci, cr = ah_configs("sha256", encap=how == "encap")
    net = handshake(ci, cr, nat=how == "nat")
    assert net.i.state == net.r.state == State.ESTABLISHED       # the IKE SA comes up without the child
    (fa,) = net.of("a", ChildSaFailed)
    assert fa.notify == Notify.NO_PROPOSAL_CHOSEN and "AH cannot traverse NAT" in fa.reason
    assert ("encap is forced" if how == "encap" else "a NAT was detected") in fa.reason
    assert net.i.stats["child_ah_refused_nat"] == 1
    # nothing was offered, so the responder saw no CHILD SA request at all
    assert not net.of("b", ChildSaEstablished) and not net.of("b", ChildSaFailed) and not net.r.children


def test_initiator_does_not_offer_ah_in_create_child_sa_behind_a_nat() -> None:
    ca, cb = configs(encap=True)
    net = handshake(ca, cb)
    net.clear()
    sent = dict(net.sent)
    net.i.create_child(net.now, _second("sha256"))
    net.run()
    (fa,) = net.of("a", ChildSaFailed)
    assert "AH cannot traverse NAT" in fa.reason and net.sent == sent       # no request went out


@pytest.mark.parametrize("exchange", ["ike_auth", "create_child_sa"])
def test_responder_refuses_an_ah_child_behind_a_nat(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that offers AH anyway (ours, told not to check) is answered NO_PROPOSAL_CHOSEN with the reason."""
    monkeypatch.setattr(ike_auth, "ah_blocked", lambda sa, c: False)
    monkeypatch.setattr(child_create, "ah_blocked", lambda sa, c: False)
    if exchange == "ike_auth":
        net = handshake(*ah_configs("sha256"), nat=True)
    else:
        ca = IkeConfig(Identity.from_string("a.example"), b"k" * 16, Identity.from_string("b.example"),
                       children=[child()])
        cb = IkeConfig(Identity.from_string("b.example"), b"k" * 16, Identity.from_string("a.example"),
                       children=[child(local="10.2.0.0/16", remote="10.1.0.0/16"),
                                 child("second", local="10.20.0.0/16", remote="10.10.0.0/16", ah="sha256")])
        net = Pair(ca, cb, nat=True).run()
        net.clear()
        net.ike("a").create_child(net.now, _second("sha256"))
        net.run()
    (fb,) = net.of("b", ChildSaFailed)
    assert fb.notify == Notify.NO_PROPOSAL_CHOSEN and "AH cannot traverse NAT" in fb.reason
    assert "a NAT was detected" in fb.reason and net.ike("b").stats["child_ah_refused_nat"] == 1
    (fa,) = net.of("a", ChildSaFailed)
    assert fa.notify == Notify.NO_PROPOSAL_CHOSEN
    assert not net.of("a", ChildSaEstablished) or exchange == "create_child_sa"
    assert not [e for e in net.of("b", ChildSaEstablished) if e.outbound.proto == "ah"]
    assert net.ike("a").state == net.ike("b").state == State.ESTABLISHED


def test_keying_an_ah_child_with_udp_encap_is_refused_not_crashed() -> None:
    """The last guard: install_child itself refuses AH on an IKE SA that floated to UDP."""
    net = handshake(*configs(encap=True))
    sa = net.i
    state = type(sa.children[0])(ChildConfig("x", [TS.from_network("10.0.0.0/8")], [TS.from_network("10.0.0.0/8")],
                                             ah_proposals="sha256"), 0x1234, 0x5678,
                                 ah_suite(parse_proposals("sha256", "ah")[0]))
    with pytest.raises(child_keying.IkeError, match="AH cannot traverse NAT"):
        child_keying.install_child(sa, state)
