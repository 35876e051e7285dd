"""RFC 7383 fragmentation against a live strongSwan 5.9.8, both roles.

Both ends cut IKE messages at 576-byte IP datagrams (charon's ``charon.fragment_size = 576`` in its
strongswan.conf, ``fragment_size=576`` on ours) and authenticate with RSA certificates, so IKE_AUTH does
not fit one datagram either way: the request and the response each travel as several SKF fragments.
The IKE SA and the CHILD SA must come up with the SPIs both sides list, charon's log must show that it
split its own message into fragments and reassembled ours, and our SA's counters must show the same.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from support.charon_peer import OUR_TS, THEIR_HOST, THEIR_TS, Session
from support.pki import CA, pem_cert, pem_key
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks, swanctl_conf_pubkey

from control.ike.certs import Credentials
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed
from control.ike.ts_payload import TrafficSelectorEntry
from control.ike_udp import IkeUdpEndpoint

pytestmark = interop_marks()

IKE, ESP = "aes256gcm16-prfsha384-ecp384", "aes256gcm16"
FRAGMENT_SIZE = 576


@pytest.fixture(scope="module")
def pki():
    ca = CA("ipsecgw fragment CA", "rsa")
    ours = ca.issue("gw-a", "rsa", ["gw-a.example"])
    theirs = ca.issue("gw-b", "rsa", ["gw-b.example"])
    return ca, ours, theirs


def our_cfg(ca: CA, cert, key) -> IkeConfig:
    return IkeConfig(Identity.from_string("gw-a.example"), b"", Identity.from_string("gw-b.example"),
                     ike_proposals=IKE, children=[ChildConfig("net", [TrafficSelectorEntry.from_network(OUR_TS)],
                                                              [TrafficSelectorEntry.from_network(THEIR_TS)],
                                                              esp_proposals=ESP)],
                     retransmit_timeout=1.0, retransmit_tries=3, local_auth="pubkey", remote_auth="pubkey",
                     credentials=Credentials(cert, key), cacerts=[ca.cert], fragmentation="yes",
                     fragment_size=FRAGMENT_SIZE)


def fragmenting_charon(net: NetnsPair, ca: CA, cert, key) -> Charon:
    net.add_lo_address(net.b, f"{THEIR_HOST}/32")
    files = {"x509/gw-b.pem": pem_cert(cert), "private/gw-b.key": pem_key(key), "x509ca/ca.pem": pem_cert(ca.cert)}
    conf = swanctl_conf_pubkey(local=net.b_ip, remote=net.a_ip, local_id="gw-b.example", remote_id="gw-a.example",
                               cert="gw-b.pem", ike=IKE, esp=ESP, local_ts=THEIR_TS, remote_ts=OUR_TS,
                               conn_extra="fragmentation = yes")
    return Charon(net.b, conf, files=files, charon_extra=f"fragment_size = {FRAGMENT_SIZE}")


def check_charon_log(log: str, charon_role: str) -> None:
    """charon split its IKE_AUTH into fragments and reassembled ours (strongSwan's own words)."""
    theirs = "request" if charon_role == "initiator" else "response"    # the IKE_AUTH message charon sent
    ours = "response" if charon_role == "initiator" else "request"
    assert re.search(rf"generating IKE_AUTH {theirs} 1 \[ EF\(1/(\d+)\) \]", log), log
    assert re.search(rf"parsed IKE_AUTH {ours} 1 \[ EF\(1/\d+\) \]", log), log
    assert re.search(r"received fragment #\d+ of \d+, reassembled fragmented IKE message \(\d+ bytes\)", log), log
    assert re.search(r"splitting IKE message \(\d+ bytes\) into \d+ fragments", log), log
    # no fragment of either side exceeded 576-byte IP datagrams: 576 - IPv4 - UDP - non-ESP marker
    sizes = [int(n) for n in re.findall(r"\[4500\] to \S+\[4500\] \((\d+) bytes\)", log)]
    assert sizes and max(sizes) <= FRAGMENT_SIZE - 28 - 4, sizes


def check_our_counters(stats) -> None:
    assert stats["fragmented_messages_sent"] == 1 and stats["fragments_sent"] >= 3, stats
    assert stats["fragmented_messages_received"] == 1 and stats["fragments_kept"] >= 3, stats
    assert not stats["integrity_failed"] and not stats["malformed"], stats


async def _initiate(a_ip: str, b_ip: str, cfg: IkeConfig) -> tuple[list[object], object]:
    events: list[object] = []
    sas: list[object] = []
    got = asyncio.Event()

    def on_event(sa, ev) -> None:
        events.append(ev)
        sas.append(sa)
        if isinstance(ev, ChildSaEstablished | ChildSaFailed | IkeSaFailed):
            got.set()

    ep = IkeUdpEndpoint(a_ip, (500, 4500), on_event=on_event)
    await ep.start()
    try:
        ep.initiate(cfg, b_ip)
        await asyncio.wait_for(got.wait(), 20)
        return events, sas[-1].stats
    finally:
        ep.close()


def test_fragments_with_charon_responder(pki) -> None:
    ca, (our_cert, our_key), (their_cert, their_key) = pki
    with NetnsPair(f"frgI{os.getpid() % 10000}") as net:
        with fragmenting_charon(net, ca, their_cert, their_key) as charon:
            events, stats = in_netns(net.a, lambda: asyncio.run(_initiate(net.a_ip, net.b_ip,
                                                                           our_cfg(ca, our_cert, our_key))))
            listing = charon.list_sas()
            log = charon.log_text()
    up = next((e for e in events if isinstance(e, IkeSaEstablished)), None)
    child = next((e for e in events if isinstance(e, ChildSaEstablished)), None)
    assert up is not None and child is not None, f"events {events}\ncharon log:\n{log}"
    assert up.spi_i.hex() in listing and up.spi_r.hex() in listing and "ESTABLISHED, IKEv2" in listing, listing
    ins = {int(x, 16) for x in re.findall(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)}
    assert child.outbound.spi in ins, listing
    check_charon_log(log, "responder")
    check_our_counters(stats)


async def _respond(a_ip: str, b_ip: str, charon: Charon, cfg: IkeConfig) -> tuple[list[object], object]:

    s = Session(a_ip, b_ip, charon, cfg)
    await s.ep.start()
    try:
        await s.swanctl("--initiate", "--child", "net", "--timeout", "20")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "the CHILD SA charon initiated")
        await s.check()         # SPIs in charon's listing, charon's ESP decrypts on our inbound SA
        return s.events, s.ike.stats
    finally:
        s.ep.close()


def test_fragments_with_charon_initiator(pki) -> None:
    ca, (our_cert, our_key), (their_cert, their_key) = pki
    with NetnsPair(f"frgR{os.getpid() % 10000}") as net:
        with fragmenting_charon(net, ca, their_cert, their_key) as charon:
            events, stats = in_netns(net.a, lambda: asyncio.run(_respond(net.a_ip, net.b_ip, charon,
                                                                         our_cfg(ca, our_cert, our_key))))
            log = charon.log_text()
    up = next(e for e in events if isinstance(e, IkeSaEstablished))
    assert not up.initiator and str(up.remote_id) == "gw-b.example"
    check_charon_log(log, "initiator")
    check_our_counters(stats)
