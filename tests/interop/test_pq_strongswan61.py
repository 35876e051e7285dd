"""Interop with strongSwan 6.1 (Debian forky's, chrooted in a Debian 13 root): RFC 9370 hybrid key
exchange, x25519 plus ML-KEM-768 in IKE_INTERMEDIATE (RFC 9242), each side initiating.

charon's own log must show the IKE_INTERMEDIATE exchange, its SA listing the ML-KEM transform and our
SPIs, and its ESP must decrypt on our inbound SA: both sides derived the same keys after the additional
key exchange, and each accepted the other's AUTH over IntAuth.  The root comes from support.pq_root
(built once, cached); where it is missing the tests skip and say how to build it.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from support.charon_peer import Session, charon_peer, our_config
from support.pq_root import RootUnavailable, pq_root
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks

from control.ike.constants import DhGroup, Notify
from control.ike.events import ChildSaEstablished, IkeSaFailed

pytestmark = interop_marks()

IKE = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
ESP = "aes256gcm16"


def _root():
    try:
        return pq_root()
    except RootUnavailable as exc:
        pytest.skip(f"strongSwan 6.1 interop: {exc}")


async def _run(a_ip: str, b_ip: str, charon: Charon, we_initiate: bool, ike: str = IKE) -> dict:
    s = Session(a_ip, b_ip, charon, our_config(ike, ESP))
    await s.ep.start()
    try:
        if we_initiate:
            s.ep.initiate(s.cfg, b_ip)
        else:
            await s.swanctl("--initiate", "--child", "net", "--timeout", "20")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished | IkeSaFailed), "the CHILD SA", 25)
        failed = [e for e in s.events if isinstance(e, IkeSaFailed)]
        assert not failed, f"{failed}\n{charon.log_text()[-6000:]}"
        await s.check()
        listing = await s.swanctl("--list-sas")
        return {"suite": s.ike.suite, "addke_done": s.ike.addke_done, "listing": listing,
                "log": charon.log_text()}
    finally:
        s.ep.close()


@pytest.mark.parametrize("we_initiate", [False, True], ids=["charon-initiates", "we-initiate"])
def test_x25519_mlkem768_with_strongswan61(we_initiate: bool) -> None:
    root = _root()
    tag = f"pq61{'i' if we_initiate else 'r'}{os.getpid() % 10000}"
    with NetnsPair(tag) as net:
        charon = charon_peer(net, IKE, ESP, root=root)
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_run(net.a_ip, net.b_ip, charon, we_initiate)))
    assert res["suite"].dh == DhGroup.CURVE25519 and res["suite"].addke == (DhGroup.MLKEM768,)
    assert res["addke_done"] == 1
    assert "ML_KEM_768" in res["listing"], res["listing"]
    role = "request" if not we_initiate else "response"
    assert f"generating IKE_INTERMEDIATE {role}" in res["log"], res["log"][-4000:]


def test_two_additional_exchanges_with_strongswan61() -> None:
    root = _root()
    ike = "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768"
    with NetnsPair(f"pq61t{os.getpid() % 10000}") as net:
        charon = charon_peer(net, ike, ESP, root=root)
        with charon:
            res = in_netns(net.a, lambda: asyncio.run(_run(net.a_ip, net.b_ip, charon, True, ike)))
    assert res["suite"].addke == (DhGroup.MLKEM1024, DhGroup.MLKEM768) and res["addke_done"] == 2
    assert "KE1_ML_KEM_1024/KE2_ML_KEM_768" in res["listing"], res["listing"]
    assert "generating IKE_INTERMEDIATE response 2" in res["log"]


async def _refused(a_ip: str, b_ip: str, charon: Charon) -> list[IkeSaFailed]:
    s = Session(a_ip, b_ip, charon, our_config(IKE, ESP))
    await s.ep.start()
    try:
        with pytest.raises(RuntimeError, match="NO_PROPOSAL_CHOSEN"):
            await s.swanctl("--initiate", "--child", "net", "--timeout", "10")
        await s.wait(lambda e: isinstance(e, IkeSaFailed), "our refusal", 5)
        return [e for e in s.events if isinstance(e, IkeSaFailed)]
    finally:
        s.ep.close()


def test_charon_without_mlkem_against_our_required_mlkem_is_refused_and_explained() -> None:
    root = _root()
    with NetnsPair(f"pq61n{os.getpid() % 10000}") as net:
        charon = charon_peer(net, "aes256gcm16-prfsha384-x25519", ESP, root=root)
        with charon:
            failed = in_netns(net.a, lambda: asyncio.run(_refused(net.a_ip, net.b_ip, charon)))
    assert failed[0].notify == Notify.NO_PROPOSAL_CHOSEN
    detail = "\n".join(failed[0].detail)
    assert "ADDKE1): ours ke1_mlkem768, theirs none" in detail and "ke1_none" in detail, detail
