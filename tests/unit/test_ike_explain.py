"""control/ike/explain.py: proposals back into strongSwan keywords, the closest pair of two lists and what
differs, traffic selector intersections, identity and method mismatches; and the explanations the IKE core
puts on its failure events, for the responder (both sides) and the initiator (what it offered)."""

from __future__ import annotations

import pytest
from support.ike_pair import PSK, child, configs, handshake, up
from support.pki import CA

from control.ike.certs import Credentials
from control.ike.config import Identity, IkeConfig
from control.ike.constants import Notify
from control.ike.events import ChildSaFailed, IkeSaFailed
from control.ike.explain import (
    auth_mismatch,
    identity_text,
    proposal_keywords,
    proposal_mismatch,
    ts_mismatch,
    ts_widened,
)
from control.ike.message import TrafficSelectorEntry as TS
from control.ike.proposals import parse_proposal, parse_proposals
from control.ike.sa_payload import Proposal, Transform


@pytest.mark.parametrize("text, protocol", [
    ("aes256gcm16-prfsha384-ecp384", "ike"), ("aes128-sha256-modp2048", "ike"),
    ("aes128-sha256-prfsha384-x25519", "ike"), ("chacha20poly1305-prfsha512-x448", "ike"),
    ("aes128gcm16", "esp"), ("aes256-sha512-ecp521-esn", "esp"), ("aes256gmac-esn-noesn", "esp"),
    ("sha256", "ah"), ("aes128gmac-x25519-esn", "ah"),
])
def test_keywords_round_trip(text: str, protocol: str) -> None:
    # the rendering is the parser's inverse on what swanctl.conf writes in its shortest form
    assert proposal_keywords(parse_proposal(text, protocol)) == text
    assert parse_proposal(proposal_keywords(parse_proposal(text, protocol)), protocol).transforms == \
        parse_proposal(text, protocol).transforms


def test_keywords_of_algorithms_we_do_not_implement() -> None:
    # a peer's offer (strongSwan's default list has these) still reads as its configuration
    p = Proposal(1, 1, b"", [Transform(1, 3), Transform(3, 1), Transform(2, 2), Transform(4, 2), Transform(4, 99)])
    assert proposal_keywords(p) == "3des-md5-prfsha1-modp1024-dh99"
    assert proposal_keywords(parse_proposal("aes-sha1-modp2048", "ike")) == "aes128-sha1-modp2048"


def test_ike_mismatch_names_closest_pair_and_each_difference() -> None:
    ours = parse_proposals("aes256gcm16-prfsha384-ecp384", "ike")
    theirs = parse_proposals("aes128-sha256-modp2048, aes256gcm16-prfsha384-modp2048", "ike")
    lines = proposal_mismatch(ours, theirs, "IKE")
    assert lines[0] == "our IKE proposals:   aes256gcm16-prfsha384-ecp384"
    assert lines[1] == "their IKE proposals: aes128-sha256-modp2048, aes256gcm16-prfsha384-modp2048"
    # the second of theirs shares cipher and PRF: only the group differs
    assert lines[2] == "closest: ours aes256gcm16-prfsha384-ecp384, theirs aes256gcm16-prfsha384-modp2048"
    assert lines[3] == "differs: DH group: ours ecp384, theirs modp2048"


def test_mismatch_lists_every_differing_type() -> None:
    lines = proposal_mismatch(parse_proposals("aes256-sha384-ecp384"), parse_proposals("aes128-sha256-ecp384"),
                              "IKE")
    assert lines[3] == ("differs: encryption: ours aes256, theirs aes128; integrity: ours sha384, theirs sha256; "
                        "PRF: ours prfsha384, theirs prfsha256")


def test_child_mismatch_ignores_groups_in_ike_auth_and_names_esn() -> None:
    ours = parse_proposals("aes128gcm16-x25519", "esp")
    theirs = parse_proposals("aes128gcm16-ecp256-esn", "esp")
    lines = proposal_mismatch(ours, theirs, "ESP", strip_dh=True)
    assert lines[0] == "our ESP proposals:   aes128gcm16"
    assert lines[3] == "differs: ESN: ours noesn, theirs esn"
    assert "not compared" in lines[-1]
    assert "DH group: ours x25519, theirs ecp256" in proposal_mismatch(ours, theirs, "ESP")[3]


def test_ah_against_esp_says_protocol_first() -> None:
    lines = proposal_mismatch(parse_proposals("sha256", "ah"), parse_proposals("aes128-sha256", "esp"), "AH")
    assert lines[3].startswith("differs: protocol: ours AH, theirs ESP; encryption: ours none, theirs aes128")


def _ts(net: str, proto: int = 0, lo: int = 0, hi: int = 65535) -> TS:
    t = TS.from_network(net)
    return TS(t.start, t.end, proto, lo, hi)


def test_ts_mismatch_shows_both_sets_and_intersections() -> None:
    c = child(local="10.1.0.0/16", remote="10.2.0.0/16")
    lines = ts_mismatch([c], [_ts("10.2.5.0/24")], [_ts("10.9.0.0/16")])
    assert lines == [
        "their TSi (their side): 10.2.5.0/24",
        "their TSr (our side):   10.9.0.0/16",
        "child net: ours local 10.1.0.0/16, remote 10.2.0.0/16",
        "  TSi with our remote: 10.2.5.0/24",
        "  TSr with our local:  empty (the addresses do not overlap)",
    ]


@pytest.mark.parametrize("theirs, why", [
    (_ts("10.1.0.0/24", 17), "protocol 17 against 6"),
    (_ts("10.1.0.0/24", 6, 80, 80), "the ports do not overlap"),
    (TS.from_network("fd00::/64"), "IPv6 against IPv4"),
])
def test_ts_disjoint_reasons(theirs: TS, why: str) -> None:
    c = child(local="10.1.0.0/16", remote="10.2.0.0/16")
    c.local_ts = [_ts("10.1.0.0/16", 6, 443, 443)]
    assert ts_mismatch([c], [_ts("10.2.0.0/16")], [theirs])[-1] == f"  TSr with our local:  empty ({why})"


def test_auth_mismatch_text() -> None:
    lines = auth_mismatch("identity mismatch", Identity.from_string("gw-x.example"),
                          Identity.from_string("@gw-b.example"), "psk", 2)
    assert lines == ["check failed: identity mismatch", "presented identity: FQDN gw-x.example",
                     "expected identity:  FQDN gw-b.example", "method: we expect PSK, the peer used PSK"]
    assert identity_text(Identity.from_string("192.0.2.1")) == "IPv4 address 192.0.2.1"
    assert identity_text(None).startswith("any")
    assert "digital signature (RFC 7427)" in auth_mismatch("auth method", Identity.from_string("a@b.example"),
                                                           None, "psk", 14)[-1]


# -- the explanations on the IKE core's events -------------------------------------------------------


def test_ike_proposal_mismatch_explained_by_responder_offer_named_by_initiator() -> None:
    net = handshake(*configs("aes128gcm16-prfsha256-x25519", ike_r="aes256gcm16-prfsha384-ecp384"))
    (fr,), (fi,) = net.of("b", IkeSaFailed), net.of("a", IkeSaFailed)
    assert fr.notify == fi.notify == Notify.NO_PROPOSAL_CHOSEN
    assert not fr.received and fi.received
    assert fr.detail[:2] == ("our IKE proposals:   aes256gcm16-prfsha384-ecp384",
                             "their IKE proposals: aes128gcm16-prfsha256-x25519")
    assert "DH group: ours ecp384, theirs x25519" in fr.detail[3]
    assert fi.detail == ("we offered IKE proposals: aes128gcm16-prfsha256-x25519 (KE payload x25519)",)


def test_esp_mismatch_in_ike_auth() -> None:
    net = handshake(*configs(esp_i="aes128gcm16", esp_r="aes256-sha256"))
    (fr,), (fi,) = net.of("b", ChildSaFailed), net.of("a", ChildSaFailed)
    assert fr.detail[0] == "our ESP proposals:   aes256-sha256"
    assert fr.detail[3] == "differs: encryption: ours aes256, theirs aes128gcm16; integrity: ours sha256, theirs none"
    assert fi.received and fi.name == "net"
    assert fi.detail[0] == "we offered child net: ESP proposals aes128gcm16"


def test_ah_child_against_esp_child_in_ike_auth() -> None:
    net = handshake(*configs(r_child=child(local="10.2.0.0/16", remote="10.1.0.0/16", ah="sha256")))
    (fr,) = net.of("b", ChildSaFailed)
    assert fr.notify == Notify.NO_PROPOSAL_CHOSEN
    assert fr.detail[0] == "our AH proposals:   sha256"
    assert "protocol: ours AH, theirs ESP" in fr.detail[3]


def test_ts_unacceptable_explained() -> None:
    net = handshake(*configs(r_child=child(local="172.16.0.0/12", remote="10.1.0.0/16")))
    (fr,), (fi,) = net.of("b", ChildSaFailed), net.of("a", ChildSaFailed)
    assert fr.notify == fi.notify == Notify.TS_UNACCEPTABLE
    assert "their TSr (our side):   10.2.0.0/16" in fr.detail
    assert "  TSr with our local:  empty (the addresses do not overlap)" in fr.detail
    assert "  TSi (our side) 10.1.0.0/16, TSr (their side) 10.2.0.0/16" in fi.detail


def test_wrong_identity_explained_on_both_sides() -> None:
    ci, cr = configs()
    cr.remote_id = Identity.from_string("someone-else.example")
    net = handshake(ci, cr)
    (fr,), (fi,) = net.of("b", IkeSaFailed), net.of("a", IkeSaFailed)
    assert fr.detail == ("check failed: identity mismatch", "presented identity: FQDN gw-a.example",
                         "expected identity:  FQDN someone-else.example", "method: we expect PSK, the peer used PSK")
    assert fi.received
    assert fi.detail[:2] == ("we presented identity FQDN gw-a.example, auth psk",
                             "we expect the peer as FQDN gw-b.example, auth psk")


def test_wrong_psk_says_psk_mismatch_and_never_the_key() -> None:
    other = b"another secret"
    net = handshake(*configs(psk_r=other))
    (fr,), (fi,) = net.of("b", IkeSaFailed), net.of("a", IkeSaFailed)
    assert fr.detail[0] == "check failed: PSK mismatch (the peer's AUTH does not match our PSK)"
    for ev in (fr, fi):
        text = repr(ev) + "\n".join(ev.detail)
        for secret in (PSK, other):
            assert secret.decode() not in text and secret.hex() not in text


def test_create_child_sa_mismatch_explained() -> None:
    net = up(esp="aes128gcm16-x25519", esp_b="aes128gcm16-ecp384")
    net.ike("a").create_child(net.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16",
                                             esp="aes128gcm16-x25519"))
    net.run()
    (fr,), (fi,) = net.of("b", ChildSaFailed), net.of("a", ChildSaFailed)
    assert fr.notify == Notify.NO_PROPOSAL_CHOSEN and fr.name == "second"
    assert "DH group: ours ecp384, theirs x25519" in fr.detail[3]
    assert fi.received and fi.detail[0] == "we offered child second: ESP proposals aes128gcm16-x25519"


def test_a_selector_ending_before_its_start_is_shown_as_sent() -> None:
    # found by the ike_codec fuzz target (tests/fuzz/crashers/ike_codec/ts-end-before-start)
    backwards = TS(TS.from_network("10.0.0.9/32").start, TS.from_network("10.0.0.1/32").start)
    lines = ts_mismatch([child()], [backwards], [backwards])
    assert lines[0] == "their TSi (their side): 10.0.0.9-10.0.0.1"


def _cert_pair(ca_i: CA, ca_r: CA) -> tuple[IkeConfig, IkeConfig]:
    """Certificates both ways (P-256); the responder trusts ca_r only."""
    cert_i, key_i = ca_i.issue("gw-a", "p256", ["gw-a.example"])
    cert_r, key_r = ca_r.issue("gw-b", "p256", ["gw-b.example"])
    ci = IkeConfig(Identity.from_string("gw-a.example"), b"", Identity.from_string("gw-b.example"),
                   children=[child()], local_auth="pubkey", remote_auth="pubkey",
                   credentials=Credentials(cert_i, key_i, []), cacerts=[ca_r.cert])
    cr = IkeConfig(Identity.from_string("gw-b.example"), b"", Identity.from_string("gw-a.example"),
                   children=[child(local="10.2.0.0/16", remote="10.1.0.0/16")], local_auth="pubkey",
                   remote_auth="pubkey", credentials=Credentials(cert_r, key_r), cacerts=[ca_r.cert])
    return ci, cr


def test_certificate_chain_and_signature_failures_name_check_and_scheme() -> None:
    ca, other = CA(), CA("some other CA")
    (fr,) = handshake(*_cert_pair(other, ca)).of("b", IkeSaFailed)
    assert fr.detail[0].startswith("check failed: certificate chain: ")
    assert fr.detail[-1] == ("method: we expect a certificate signature (pubkey), the peer used digital "
                             "signature (RFC 7427) (ECDSA-WITH-SHA2_256)")
    ci, cr = _cert_pair(ca, ca)
    stolen, _ = ca.issue("gw-a", "p256", ["gw-a.example"])
    object.__setattr__(ci.credentials, "cert", stolen)      # the right CA, but signed by another key
    (fr,) = handshake(ci, cr).of("b", IkeSaFailed)
    assert fr.detail[0] == "check failed: signature: signature does not verify"


def test_widened_selectors_shown_against_what_we_asked() -> None:
    lines = ts_widened([_ts("10.0.0.0/8")], [_ts("10.2.0.0/16")], [_ts("10.1.0.0/16")], [_ts("10.2.0.0/16")])
    assert lines == ["their TSi 10.0.0.0/8, we asked for 10.1.0.0/16",
                     "their TSr 10.2.0.0/16, we asked for 10.2.0.0/16"]
