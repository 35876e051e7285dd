"""Interop with a live strongSwan 5.9.8 after IKE_AUTH: ours as RESPONDER with charon initiating, then
CHILD SA and IKE SA rekeys started by either side, DPD both ways, new CHILD SAs and deletes from
either side.  After every step the SPIs in ``swanctl --list-sas`` must be ours, and charon's ESP must
decrypt on our current inbound SA (so both sides derived the same KEYMAT, PFS included)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from support.charon_peer import Session, charon_peer, our_config
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks

from control.ike.config import IkeConfig
from control.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaFailed,
)
from control.ike.sa import IkeSA

pytestmark = interop_marks()


async def _scenario(a_ip: str, b_ip: str, charon: Charon, cfg: IkeConfig) -> dict:
    s = Session(a_ip, b_ip, charon, cfg)
    await s.ep.start()
    ep = s.ep
    try:
        # 1. charon initiates; we answer IKE_SA_INIT and IKE_AUTH
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "first CHILD SA")
        await s.check()

        # 2. charon rekeys the CHILD SA
        old = s.newest_child().inbound.spi
        s.events.clear()
        await s.swanctl("--rekey", "--child", "net")
        await s.wait(lambda e: isinstance(e, ChildSaDeleted) and e.spi_in == old, "charon's CHILD rekey")
        assert s.newest_child().rekey_of == old
        await s.check()

        # 3. we rekey the CHILD SA
        old = s.newest_child().inbound.spi
        s.events.clear()
        ep.call(s.ike, IkeSA.rekey_child, old)
        await s.wait(lambda e: isinstance(e, ChildSaDeleted) and e.spi_in == old, "our CHILD rekey")
        await s.check()

        # 4. charon rekeys the IKE SA, 5. we do
        for who in ("charon", "us"):
            before = s.ike
            s.events.clear()
            if who == "charon":
                await s.swanctl("--rekey", "--ike", "peer")
            else:
                ep.call(s.ike, IkeSA.rekey_ike)
            await s.wait(lambda e: isinstance(e, IkeSaDeleted) and e.rekeyed, f"{who}'s IKE rekey")
            assert s.ike is not before and s.ike.children and not before.children
            listing = await s.swanctl("--list-sas")
            assert before.spi_i.hex() not in listing
            await s.check()

        # 6. DPD: ours answered by charon, charon's (dpd_delay) answered by us
        ep.call(s.ike, IkeSA.dpd)
        deadline = time.monotonic() + 10
        while s.ike.stats["dpd_answered"] < 1 or s.ike.stats["dpd_received"] < 1:
            assert time.monotonic() < deadline, s.ike.stats
            await asyncio.sleep(0.1)

        # 7. charon deletes the CHILD SA, then creates a new one with CREATE_CHILD_SA
        s.events.clear()
        await s.swanctl("--terminate", "--child", "net", "--timeout", "10")
        await s.wait(lambda e: isinstance(e, ChildSaDeleted), "charon's CHILD delete")
        assert not s.children
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "charon's CREATE_CHILD_SA")
        await s.check()

        # 8. we delete the CHILD SA, then create one ourselves
        s.events.clear()
        ep.call(s.ike, IkeSA.delete_child, s.newest_child().inbound.spi)
        await s.wait(lambda e: isinstance(e, ChildSaDeleted), "our CHILD delete")
        assert "INSTALLED" not in await s.swanctl("--list-sas")
        ep.call(s.ike, IkeSA.create_child, cfg.children[0])
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "our CREATE_CHILD_SA")
        await s.check()

        # 9. we delete the IKE SA
        s.events.clear()
        ep.call(s.ike, IkeSA.delete)
        await s.wait(lambda e: isinstance(e, IkeSaDeleted), "our IKE delete")
        await asyncio.sleep(0.3)
        assert "ESTABLISHED" not in await s.swanctl("--list-sas")

        # 10. charon again, and charon deletes the IKE SA
        s.events.clear()
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "second IKE SA")
        await s.check()
        s.events.clear()
        await s.swanctl("--terminate", "--ike", "peer", "--timeout", "10")
        gone = await s.wait(lambda e: isinstance(e, IkeSaDeleted), "charon's IKE delete")
        assert not gone.rekeyed and any(isinstance(e, ChildSaDeleted) for e in s.events)
        assert not any(isinstance(e, IkeSaFailed) for e in s.events)
        return {"ok": True}
    finally:
        ep.close()


@pytest.mark.parametrize("ike,esp", [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"),      # PFS in every CREATE_CHILD_SA
    ("aes256-sha384-ecp384", "aes256-sha256"),
])
def test_charon_initiates_then_rekeys_dpd_deletes(ike: str, esp: str) -> None:
    tag = f"ikeX{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        charon = charon_peer(net, ike, esp, conn_extra="dpd_delay = 1s")
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_scenario(net.a_ip, net.b_ip, charon, our_config(ike, esp))))
    assert res == {"ok": True}


async def _timers(a_ip: str, b_ip: str, charon: Charon, cfg: IkeConfig) -> dict:
    s = Session(a_ip, b_ip, charon, cfg)
    await s.ep.start()
    try:
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        first = s.ike
        # Generous deadlines: charon's timers carry jitter, and CI machines are busy.
        await s.wait(lambda e: isinstance(e, IkeSaDeleted) and e.rekeyed, "charon's timed IKE rekey", 30)
        deadline = time.monotonic() + 30
        while sum(isinstance(e, ChildSaDeleted) for e in s.events) < 2:
            assert time.monotonic() < deadline, s.events
            await asyncio.sleep(0.1)
        assert s.ike is not first and s.ike.children
        await s.check()
        return {"ok": True, "events": [type(e).__name__ for e in s.events]}
    finally:
        s.ep.close()


def test_charon_rekeys_on_its_timers() -> None:
    """Short strongSwan rekey_time settings: charon rekeys the CHILD SA and the IKE SA on its own."""
    ike, esp = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
    tag = f"ikeT{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        charon = charon_peer(net, ike, esp,
                             conn_extra="rekey_time = 4s\n        rand_time = 0s\n        over_time = 20s",
                             child_extra="rekey_time = 2s\n                rand_time = 0s\n"
                                         "                life_time = 20s")
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_timers(net.a_ip, net.b_ip, charon, our_config(ike, esp))))
    assert res["ok"], res
