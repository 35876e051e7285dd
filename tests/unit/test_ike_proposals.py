"""strongSwan proposal keywords -> transforms, and proposal selection."""

from __future__ import annotations

import pytest

from control.ike.constants import DhGroup, Encr, Esn, Integ, Prf, ProtocolId, TransformType
from control.ike.proposals import (
    ProposalError,
    esp_suite,
    ike_suite,
    parse_proposal,
    parse_proposals,
    proposal_acceptable,
    select_proposal,
)
from control.ike.sa_payload import Proposal, Transform


def types(p: Proposal) -> list[tuple[int, int, int | None]]:
    return [(t.type, t.id, t.key_length) for t in p.transforms]


def test_ike_keywords() -> None:
    assert types(parse_proposal("aes128gcm16-prfsha256-x25519")) == [
        (1, Encr.AES_GCM_16, 128), (2, Prf.HMAC_SHA2_256, None), (4, DhGroup.CURVE25519, None)]
    # integrity keywords give the PRFs when none is written
    assert types(parse_proposal("aes256-sha384-ecp384")) == [
        (1, Encr.AES_CBC, 256), (2, Prf.HMAC_SHA2_384, None), (3, Integ.HMAC_SHA2_384_192, None),
        (4, DhGroup.ECP_384, None)]
    # with an AEAD, integrity keywords only name PRFs
    assert types(parse_proposal("aes256gcm16-sha256-modp2048")) == [
        (1, Encr.AES_GCM_16, 256), (2, Prf.HMAC_SHA2_256, None), (4, DhGroup.MODP_2048, None)]
    assert types(parse_proposal("chacha20poly1305-prfsha512-curve448")) == [
        (1, Encr.CHACHA20_POLY1305, None), (2, Prf.HMAC_SHA2_512, None), (4, DhGroup.CURVE448, None)]
    # alternatives of one type in one proposal
    p = parse_proposal("aes128-aes256-sha256-sha512-ecp256-ecp521")
    assert [t.key_length for t in p.of_type(TransformType.ENCR)] == [128, 256]
    assert [t.id for t in p.of_type(TransformType.DH)] == [DhGroup.ECP_256, DhGroup.ECP_521]
    assert [p.num for p in parse_proposals("aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384")] == [1, 2]


def test_esp_keywords() -> None:
    assert types(parse_proposal("aes128gcm16", "esp")) == [(1, Encr.AES_GCM_16, 128), (5, Esn.NO, None)]
    assert types(parse_proposal("aes128gcm16-esn", "esp")) == [(1, Encr.AES_GCM_16, 128), (5, Esn.YES, None)]
    assert types(parse_proposal("aes256-sha256-x25519-esn-noesn", "esp")) == [
        (1, Encr.AES_CBC, 256), (3, Integ.HMAC_SHA2_256_128, None), (4, DhGroup.CURVE25519, None),
        (5, Esn.YES, None), (5, Esn.NO, None)]
    assert parse_proposal("aes128gcm16", "esp").protocol == ProtocolId.ESP


@pytest.mark.parametrize("text,proto", [
    ("aes128gcm16-x25519", "ike"),            # no PRF
    ("aes128-prfsha256-x25519", "ike"),       # CBC without integrity
    ("aes128gcm16-prfsha256", "ike"),         # no group
    ("aes128gcm16-sha256", "esp"),            # AEAD with integrity in ESP
    ("aes128", "esp"),
    ("aes128-aes128gcm16-sha256", "esp"),     # AEAD mixed with a plain cipher
    ("blowfish-sha256-modp2048", "ike"),
    ("aes128gcm16-prfsha256-modp1024", "ike"),
    ("aes128gcm16-prfsha256", "esp"),
    ("", "ike"),
])
def test_bad_proposals(text: str, proto: str) -> None:
    with pytest.raises(ProposalError):
        parse_proposals(text, proto)


def test_selection() -> None:
    ours = parse_proposals("aes256gcm16-prfsha384-ecp384, aes128gcm16-prfsha256-x25519")
    theirs = parse_proposals("aes128-sha256-modp2048, aes128gcm16-aes256gcm16-prfsha256-ecp256-x25519")
    chosen = select_proposal(ours, theirs)
    assert chosen is not None and chosen.num == 2
    assert types(chosen) == [(1, Encr.AES_GCM_16, 128), (2, Prf.HMAC_SHA2_256, None), (4, DhGroup.CURVE25519, None)]
    assert proposal_acceptable(ours, chosen)
    suite = ike_suite(chosen)
    assert (suite.encr, suite.key_bits, suite.prf, suite.integ, suite.dh) == (
        Encr.AES_GCM_16, 128, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519)
    assert select_proposal(ours, parse_proposals("aes128-sha1-modp2048")) is None
    # a key length that differs is a different transform
    assert select_proposal(parse_proposals("aes128gcm16-prfsha256-x25519"),
                           parse_proposals("aes256gcm16-prfsha256-x25519")) is None
    # a choice with two transforms of one type is not a valid answer
    two = Proposal(1, ProtocolId.IKE, b"", chosen.transforms + [Transform(4, DhGroup.ECP_384)])
    assert not proposal_acceptable(ours, two)


def test_esp_selection_and_suite() -> None:
    ours = parse_proposals("aes128gcm16-x25519, aes256-sha512", "esp")
    theirs = parse_proposals("aes256-sha512-esn-noesn", "esp")
    theirs[0].spi = b"\x00\x00\x10\x00"
    chosen = select_proposal(ours, theirs, strip_dh=True)
    assert chosen is not None and chosen.spi == b"\x00\x00\x10\x00"
    s = esp_suite(chosen)
    assert (s.enc, s.integ, s.enc_key_len, s.integ_key_len, s.esn) == ("aes-cbc-256", "hmac-sha512-256", 32, 64, False)
    # the first proposal has a group; in IKE_AUTH (strip_dh) it still matches a group-less offer
    gcm = select_proposal(ours, parse_proposals("aes128gcm16-esn", "esp"), strip_dh=True)
    assert gcm is None      # ESN only vs our no-ESN
    gcm = select_proposal(ours, parse_proposals("aes128gcm16", "esp"), strip_dh=True)
    assert gcm is not None and esp_suite(gcm).enc == "aes-gcm-128" and esp_suite(gcm).enc_key_len == 20
    assert select_proposal(ours, parse_proposals("aes128gcm16", "esp")) is None   # outside IKE_AUTH the group counts
    assert esp_suite(parse_proposal("chacha20poly1305-esn", "esp")).esn
    with pytest.raises(ProposalError):
        esp_suite(parse_proposal("aes192-sha256", "esp"))      # no AES-192-CBC in the data plane
