"""control/initiate_outcome.py and ``initiate``'s text: which events end a wait, and how, and what the
operator reads (the failure on the first line, the explanation, then what we offered)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from support.ike_pair import configs

from control.ike.constants import Notify
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed, State
from control.initiate_outcome import OutcomeWaiters
from control.verbs.running import format_outcome


def _entry(spi: bytes = b"\x01" * 8, conn: str = "peer"):
    ci, _ = configs()
    ike = SimpleNamespace(config=ci, remote=("192.0.2.2", 500), state=State.CONNECTING, our_spi=spi)
    return SimpleNamespace(conn=SimpleNamespace(name=conn), ike=ike, spi=spi, established=None, label=f"{conn}[1]")


def _child_up(name: str = "net") -> ChildSaEstablished:
    sa = SimpleNamespace(spi=0x1234)       # only the SPIs are read
    return ChildSaEstablished(name, sa, sa, None, [], [])     # type: ignore[arg-type]


def _run(steps) -> dict:
    async def go() -> dict:
        ws = OutcomeWaiters()
        entry = _entry()
        w = ws.wait(entry, ["net"])
        for e, ev in steps(entry):
            ws.note(e, ev)
        assert w.future.done()
        return w.future.result().to_dict()
    return asyncio.run(go())


def test_ike_and_child_up_is_success() -> None:
    res = _run(lambda e: [(e, IkeSaEstablished(b"", b"", True, None, None, None, None, False, False)),
                          (e, _child_up())])
    assert res["ok"] and res["child_sas"] == [{"name": "net", "spi_in": "00001234", "spi_out": "00001234"}]
    assert res["offered"] == []
    assert format_outcome("peer", res).splitlines() == ["peer: up, IKE SA peer[1] with 192.0.2.2",
                                                        "  CHILD SA net: in 0x00001234, out 0x00001234"]


def test_refusal_by_peer_shows_what_we_offered() -> None:
    res = _run(lambda e: [(e, IkeSaFailed(Notify.NO_PROPOSAL_CHOSEN, "IKE_SA_INIT refused by the peer",
                                          ("we offered IKE proposals: x",), True))])
    assert not res["ok"] and res["failure"] == "NO_PROPOSAL_CHOSEN" and res["detail"] == []
    lines = format_outcome("peer", res).splitlines()
    assert lines[0] == "peer: failed: NO_PROPOSAL_CHOSEN from 192.0.2.2 (IKE_SA_INIT refused by the peer)"
    assert lines[1] == "  we offered IKE proposals: aes128gcm16-prfsha256-x25519"
    assert "  we presented identity FQDN gw-a.example, auth psk" in lines


def test_our_refusal_shows_explanation_then_offer() -> None:
    res = _run(lambda e: [(e, ChildSaFailed("net", Notify.TS_UNACCEPTABLE, "responder widened",
                                            ("why it failed",)))])
    lines = format_outcome("net", res).splitlines()
    assert lines[0] == "net: failed: TS_UNACCEPTABLE with 192.0.2.2 (CHILD SA net: responder widened)"
    assert lines[1:3] == ["  why it failed", "  what we offered:"]
    assert lines[3].startswith("    we offered IKE proposals")


def test_retransmits_running_out_is_a_timeout() -> None:
    res = _run(lambda e: [(e, IkeSaFailed(0, "no response to IKE_SA_INIT after 5 transmissions"))])
    assert res["failure"] == "timeout"


def test_other_ike_sas_and_other_children_do_not_end_the_wait() -> None:
    async def go() -> None:
        ws = OutcomeWaiters()
        entry, other = _entry(), _entry(b"\x02" * 8)
        w = ws.wait(entry, ["net"])
        ws.note(other, IkeSaFailed(Notify.AUTHENTICATION_FAILED, "another attempt"))
        ws.note(entry, ChildSaFailed("second", Notify.NO_PROPOSAL_CHOSEN, "not this one"))
        ws.note(_entry(conn="else"), IkeSaFailed(Notify.NO_PROPOSAL_CHOSEN, "another connection"))
        assert not w.future.done()
        ws.dropped(entry, "deleted")
        assert w.future.result().failure == "IKE SA gone"
        ws.forget(w)
        assert w.timed_out(3).failure == "timeout"
    asyncio.run(go())
