"""Our IKE core as a road-warrior client (``vips``) against strongSwan 5.9.8 as the gateway with a pool.

Shown: our CFG_REQUEST is answered with an address of charon's pool and its DNS server; our CHILD SA is
narrowed to that address (charon lists it as our virtual IP); an ICMP echo from the address through our
outbound SA reaches charon's protected host, and the reply comes back on our inbound SA.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os

from support.charon_peer import PSK, THEIR_HOST, THEIR_TS, esp_in_udp, icmp_echo
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks, swanctl_conf

from cdefs.sa import Direction
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed
from control.ike.ts_payload import TrafficSelectorEntry
from control.ike_udp import IkeUdpEndpoint
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.status import Status

pytestmark = interop_marks()

POOL, DNS = "10.99.0.0/28", "10.2.0.53"


def _charon(net: NetnsPair) -> Charon:
    net.add_lo_address(net.b, f"{THEIR_HOST}/32")
    conf = swanctl_conf(local=net.b_ip, remote=net.a_ip, local_id="gw-b.example", remote_id="gw-a.example",
                        psk=PSK, ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16", local_ts=THEIR_TS,
                        remote_ts="dynamic", conn_extra="pools = rw")
    conf += f"pools {{\n    rw {{\n        addrs = {POOL}\n        dns = {DNS}\n    }}\n}}\n"
    return Charon(net.b, conf)


async def _client(a_ip: str, b_ip: str) -> dict:
    events: list[object] = []
    esp_rx: list[bytes] = []
    got = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_event(sa, ev) -> None:
        events.append(ev)
        if isinstance(ev, ChildSaEstablished | ChildSaFailed | IkeSaFailed):
            got.set()

    def on_esp(data, remote) -> None:
        esp_rx.append(data)
        loop.call_soon(got.set)

    cfg = IkeConfig(Identity.from_string("gw-a.example"), PSK.encode(), Identity.from_string("gw-b.example"),
                    children=[ChildConfig("net", [TrafficSelectorEntry.from_network("0.0.0.0/0")],
                                          [TrafficSelectorEntry.from_network(THEIR_TS)])],
                    vips=(4,), retransmit_timeout=1.0, retransmit_tries=3)
    ep = IkeUdpEndpoint(a_ip, (500, 4500), on_event=on_event, on_esp=on_esp)
    await ep.start()
    try:
        sa = ep.initiate(cfg, b_ip)
        await asyncio.wait_for(got.wait(), 15)
        child = next((e for e in events if isinstance(e, ChildSaEstablished)), None)
        out = {"events": events, "child": child, "dns": list(sa.dns), "reply": None}
        if child is None:
            return out
        vip = str(child.local_ts[0].start)
        engine = create("best")
        engine.add_sa(0, child.inbound, Direction.IN)
        engine.add_sa(1, child.outbound, Direction.OUT)
        try:
            # charon installs its route to our address a moment after the CHILD SA: a few tries
            for seq in range(1, 11):
                esp_rx.clear()
                got.clear()
                b = Batch(capacity=1)
                b.append(icmp_echo(vip, THEIR_HOST, 0x4243, seq), 1)
                engine.outbound(b)
                assert Status(int(b.status[0])) == Status.OK
                ep.send_raw(b.packet(0)[28:], 4500, (b_ip, 4500))     # strip outer IPv4 + UDP
                try:
                    await asyncio.wait_for(got.wait(), 0.5)
                except TimeoutError:
                    continue
                for data in esp_rx:
                    b = Batch(capacity=1)
                    b.append(esp_in_udp(b_ip, a_ip, data))
                    engine.inbound(b)
                    if Status(int(b.status[0])) == Status.OK:
                        out["reply"] = b.packet(0)
                if out["reply"] is not None:
                    break
        finally:
            engine.close()
        return out
    finally:
        ep.close()


def test_our_client_gets_an_address_from_charons_pool() -> None:
    with NetnsPair(f"rwC{os.getpid() % 100000}") as net:
        with _charon(net) as charon:
            res = in_netns(net.a, lambda: asyncio.run(_client(net.a_ip, net.b_ip)))
            listing = charon.list_sas()
            log = charon.log_text()
    events = res["events"]
    (up,) = [e for e in events if isinstance(e, IkeSaEstablished)]
    assert len(up.vips) == 1 and up.vips[0] in ipaddress.ip_network(POOL), f"{events}\n{log[-4000:]}"
    vip = str(up.vips[0])
    assert res["dns"] == [ipaddress.ip_address(DNS)]
    child = res["child"]
    assert child is not None, f"{events}\n{log[-4000:]}"
    assert [str(t.start) for t in child.local_ts] == [vip] and [str(t.end) for t in child.local_ts] == [vip]
    # charon's view: our virtual IP on the IKE SA, and the CHILD SA's remote selector
    assert f"remote 'gw-a.example' @ {net.a_ip}[4500] [{vip}]" in listing, listing
    assert f"remote {vip}/32" in listing, listing
    reply = res["reply"]
    assert reply is not None, log[-4000:]
    # the echo reply from charon's host to our address
    assert reply[9] == 1 and reply[12:16] == ipaddress.ip_address(THEIR_HOST).packed
    assert reply[16:20] == ipaddress.ip_address(vip).packed and reply[20] == 0
