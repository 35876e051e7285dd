"""Negotiated CHILD SAs never use an SPI in 1..255 (reserved for IANA, RFC 4303 2.1): we never pick one,
and a peer that offers or answers with one is refused (static SA files may still carry them)."""

from __future__ import annotations

import types

import pytest
from support.ike_pair import Pair, cfgs, child, up

import control.ike.spi as ike_spi
from control.ike.constants import MIN_NEGOTIATED_SPI, Notify
from control.ike.events import ChildSaEstablished, ChildSaFailed
from control.ike.spi import random_esp_spi
from control.ike.tasks import child_create, ike_auth


def test_random_esp_spi_draws_again_below_256(monkeypatch) -> None:
    draws = iter([b"\x00\x00\x00\x34", b"\x00\x00\x00\x00", b"\x00\x00\x00\xff", b"\x00\x00\x01\x00"])
    monkeypatch.setattr(ike_spi, "os", types.SimpleNamespace(urandom=lambda n: next(draws)))
    assert random_esp_spi() == MIN_NEGOTIATED_SPI


def _picks(monkeypatch, module, values) -> None:
    """The SPIs the CHILD code of ``module`` picks, in order, in place of random ones."""
    seq = iter(values)
    monkeypatch.setattr(module, "random_esp_spi", lambda: next(seq))


def _established(p: Pair, side: str) -> list[ChildSaEstablished]:
    return p.of(side, ChildSaEstablished)


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_ike_auth_child_with_a_reserved_spi_is_refused(monkeypatch, who) -> None:
    # the first pick is the initiator's offer, the second the responder's answer
    _picks(monkeypatch, ike_auth, [0x34, 0x5000] if who == "initiator" else [0x5000, 0x34])
    p = Pair(*cfgs()).run()
    assert not _established(p, "a")
    if who == "initiator":
        # the responder refuses the offer before it keys anything
        assert not _established(p, "b")
        assert p.of("a", ChildSaFailed)[0].notify == Notify.NO_PROPOSAL_CHOSEN


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_create_child_sa_with_a_reserved_spi_is_refused(monkeypatch, who) -> None:
    p = up()
    _picks(monkeypatch, child_create, [0xFF, 0x6000] if who == "initiator" else [0x6000, 0xFF])
    p.ike("a").create_child(p.now, child("second", local="10.10.0.0/16", remote="10.20.0.0/16"))
    p.run()
    assert not _established(p, "a")
    assert p.of("a", ChildSaFailed)
    if who == "initiator":
        assert not _established(p, "b")

