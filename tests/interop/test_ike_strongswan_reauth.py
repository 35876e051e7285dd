"""Reauthentication against a live strongSwan 5.9.8 (RFC 7296 §2.8.3).

- charon reauthenticates on its own short ``reauth_time``, break-before-make (5.9's default) and
  make-before-break (``charon.make_before_break = yes``); ours answers as responder.
- ours initiates and reauthenticates on its own ``reauth_time`` (make before break, charon with
  ``unique = never`` so the old IKE SA is ours to delete).

Afterwards ``swanctl --list-sas`` must show the new IKE SPIs and not the old ones, our newest CHILD
SPIs, and charon's ESP must decrypt on our newest inbound SA."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from support.charon_peer import Session, charon_peer, our_config
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks

from control.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaReauthenticated,
    IkeSaReauthStarted,
)
from control.ike.sa import IkeSA

pytestmark = interop_marks()

IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"


async def _check_replaced(s: Session, old: IkeSA) -> None:
    """After a reauthentication: charon lists no SPI of the old IKE SA, the new pair passes
    ``Session.check`` and no IKE SA failed on the way."""
    listing = await s.swanctl("--list-sas")
    assert old.spi_i.hex() not in listing, listing
    await s.check()
    assert not any(isinstance(e, IkeSaFailed) for e in s.events)


async def _charon_reauths(a_ip: str, b_ip: str, charon: Charon) -> dict:
    s = Session(a_ip, b_ip, charon, our_config(IKE, ESP))
    await s.ep.start()
    try:
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "first CHILD SA")
        first, first_child = s.ike, s.newest_child()
        await s.check()
        s.events.clear()
        # charon's reauth_time (3 s): a second IKE SA comes up and the first one is deleted by charon
        await s.wait(lambda e: isinstance(e, IkeSaEstablished), "charon's reauthentication", 30)
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "the re-created CHILD SA", 15)
        await s.wait(lambda e: isinstance(e, IkeSaDeleted) and e.spi_i == first.spi_i, "old IKE SA deleted", 15)
        assert s.ike is not first and s.ike.spi_i != first.spi_i
        assert first_child.inbound.spi not in s.children
        await _check_replaced(s, first)
        return {"ok": True}
    finally:
        s.ep.close()


@pytest.mark.parametrize("mbb", ["no", "yes"])
def test_charon_reauthenticates(mbb: str) -> None:
    tag = f"rA{mbb[0]}{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        charon = charon_peer(net, IKE, ESP, f"make_before_break = {mbb}",
                             conn_extra="reauth_time = 3s\n        rand_time = 0s\n        over_time = 30s")
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_charon_reauths(net.a_ip, net.b_ip, charon)))
    assert res == {"ok": True}


async def _we_reauth(a_ip: str, b_ip: str, charon: Charon) -> dict:
    cfg = our_config(IKE, ESP)
    cfg.reauth_time, cfg.rand_time, cfg.over_time = 3.0, 0.0, 30.0
    s = Session(a_ip, b_ip, charon, cfg)
    s.ep.responder_config = None
    await s.ep.start()
    try:
        first = s.ep.initiate(cfg, b_ip)
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "first CHILD SA")
        first_child = s.newest_child()
        await s.check()
        s.events.clear()
        started = await s.wait(lambda e: isinstance(e, IkeSaReauthStarted), "our reauthentication", 15)
        t0 = time.monotonic()
        new_child = await s.wait(lambda e: isinstance(e, ChildSaEstablished), "re-created CHILD SA", 15)
        assert new_child.rekey_of == first_child.inbound.spi
        await s.wait(lambda e: isinstance(e, IkeSaReauthenticated), "reauth complete", 15)
        gone = await s.wait(lambda e: isinstance(e, IkeSaDeleted) and e.spi_i == first.spi_i, "old IKE SA gone", 15)
        assert gone.rekeyed and gone.reason == "reauthenticated"
        # make before break: the new pair was announced before the old one went
        kinds = [(type(e).__name__, getattr(e, "spi_in", None)) for e in s.events]
        assert kinds.index(("ChildSaEstablished", None)) < kinds.index(("ChildSaDeleted", first_child.inbound.spi))
        assert any(isinstance(e, ChildSaDeleted) and e.spi_in == first_child.inbound.spi for e in s.events)
        s.ike = started.new_sa
        assert time.monotonic() - t0 < 15
        await _check_replaced(s, first)
        return {"ok": True}
    finally:
        s.ep.close()


def test_we_reauthenticate() -> None:
    tag = f"rB{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        charon = charon_peer(net, IKE, ESP, conn_extra="unique = never")
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_we_reauth(net.a_ip, net.b_ip, charon)))
    assert res == {"ok": True}
