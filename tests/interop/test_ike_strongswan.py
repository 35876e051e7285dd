"""Interop with a live strongSwan 5.9.8: our initiator against charon as responder.

The handshake must complete on both sides with the SPIs we negotiated, and the
CHILD SA keys must agree: ESP that charon sends is decrypted by our inbound SA,
and ESP our outbound SA produces is accepted by charon (its reply comes back).
charon's kernel-libipsec forces NAT-T, so IKE floats to 4500 and ESP is in UDP.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest
from support.charon_peer import (
    OUR_HOST,
    OUR_TS,
    THEIR_HOST,
    THEIR_TS,
    Session,
    charon_peer,
    esp_in_udp,
    icmp_echo,
    our_config,
)
from support.pki import CA, pem_cert, pem_key
from support.strongswan import Charon, NetnsPair, in_netns, interop_marks, swanctl_conf_pubkey

from cdefs.sa import Direction
from control.ike.certs import Credentials
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.events import ChildSaEstablished, ChildSaFailed, IkeSaEstablished, IkeSaFailed
from control.ike.ts_payload import TrafficSelectorEntry
from control.ike_udp import IkeUdpEndpoint
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.status import Status

pytestmark = interop_marks()

async def _initiator_session(a_ip: str, b_ip: str, charon_ns: str, ike: str, esp: str,
                             cfg: IkeConfig | None = None) -> dict:
    events: list[object] = []
    esp_rx: list[bytes] = []
    got = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_event(sa, ev):
        events.append(ev)
        if isinstance(ev, ChildSaEstablished | ChildSaFailed | IkeSaFailed):
            got.set()

    def on_esp(data, remote):
        esp_rx.append(data)
        loop.call_soon(got.set)

    ep = IkeUdpEndpoint(a_ip, (500, 4500), on_event=on_event, on_esp=on_esp)
    await ep.start()
    try:
        cfg = cfg or our_config(ike, esp)
        ep.initiate(cfg, b_ip)
        await asyncio.wait_for(got.wait(), 15)
        child = next((e for e in events if isinstance(e, ChildSaEstablished)), None)
        out = {"events": events, "child": child, "esp_in": [], "reply": None}
        if child is None:
            return out
        engine = create("best")
        engine.add_sa(0, child.inbound, Direction.IN)
        engine.add_sa(1, child.outbound, Direction.OUT)

        # charon -> us: a UDP datagram from its protected host travels its CHILD SA to our inbound SA
        # (charon installs its route into ipsec0 just after the CHILD SA: a few tries may be needed)
        send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.bind(('{THEIR_HOST}', 0)); s.sendto(b'hello from charon side', ('{OUR_HOST}', 9))")
        for _ in range(20):
            got.clear()
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", charon_ns, sys.executable, "-c", send],
                                    capture_output=True)
            try:
                await asyncio.wait_for(got.wait(), 0.2)
            except TimeoutError:
                continue
            break
        for data in list(esp_rx):
            b = Batch(capacity=1)
            b.append(esp_in_udp(b_ip, a_ip, data))
            engine.inbound(b)
            out["esp_in"].append((Status(int(b.status[0])), b.packet(0)))

        # us -> charon: our outbound SA's ESP must reach charon's host, whose reply comes back through its SA
        esp_rx.clear()
        got.clear()
        b = Batch(capacity=1)
        b.append(icmp_echo(OUR_HOST, THEIR_HOST, 0x4242, 1), 1)
        engine.outbound(b)
        assert Status(int(b.status[0])) == Status.OK
        ep.send_raw(b.packet(0)[28:], 4500, (b_ip, 4500))     # strip outer IPv4 + UDP
        try:
            await asyncio.wait_for(got.wait(), 5)
        except TimeoutError:
            pass
        for data in esp_rx:
            b = Batch(capacity=1)
            b.append(esp_in_udp(b_ip, a_ip, data))
            engine.inbound(b)
            if Status(int(b.status[0])) == Status.OK:
                out["reply"] = b.packet(0)
        engine.close()
        return out
    finally:
        ep.close()


@pytest.mark.parametrize("ike,esp", [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
    ("aes256-sha384-ecp384", "aes256-sha256"),
])
def test_our_initiator_with_charon_responder(ike: str, esp: str) -> None:
    tag = f"ikeS{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        with charon_peer(net, ike, esp) as charon:
            res = in_netns(net.a, lambda: asyncio.run(_initiator_session(net.a_ip, net.b_ip, net.b, ike, esp)))
            listing = charon.list_sas()
            log = charon.log_text()
    events = res["events"]
    ike_up = next((e for e in events if isinstance(e, IkeSaEstablished)), None)
    assert ike_up is not None, f"events {events}\ncharon log:\n{log}"
    child = res["child"]
    assert child is not None, f"events {events}\ncharon log:\n{log}"
    assert ike_up.nat_remote        # charon with kernel-libipsec fakes its NAT-D hash to force NAT-T

    # charon shows the IKE SA (SPIs) and the CHILD SA (its in SPI is our out SPI and vice versa)
    assert "ESTABLISHED, IKEv2" in listing, listing
    assert ike_up.spi_i.hex() in listing and ike_up.spi_r.hex() in listing, listing
    assert "INSTALLED, TUNNEL-in-UDP" in listing, listing
    spi_in = re.search(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)
    spi_out = re.search(r"^\s+out\s+([0-9a-f]{8}),", listing, re.M)
    assert spi_in and spi_out, listing
    assert int(spi_in.group(1), 16) == child.outbound.spi
    assert int(spi_out.group(1), 16) == child.inbound.spi
    assert f"{OUR_TS}" in listing and f"{THEIR_TS}" in listing

    # charon's ESP decrypts on our inbound SA into its host's UDP datagram
    assert res["esp_in"], "charon sent no ESP"
    status, inner = res["esp_in"][0]
    assert status == Status.OK
    assert inner[9] == 17 and inner[12:16] == bytes([10, 2, 0, 1]) and inner[16:20] == bytes([10, 1, 0, 1])
    assert inner.endswith(b"hello from charon side")

    # our ESP was accepted by charon: its host's echo reply came back through the tunnel
    reply = res["reply"]
    assert reply is not None, f"no echo reply through charon\n{log}"
    assert reply[9] == 1 and reply[20] == 0 and reply[24:26] == b"\x42\x42"


def cert_cfg(ca: CA, cert, key, our_id: str, their_id: str, ike: str, esp: str, pss: bool = False) -> IkeConfig:
    """Our side of the certificate interop tests: signs with cert/key, trusts only ca."""
    return IkeConfig(Identity.from_string(our_id), b"", Identity.from_string(their_id), ike_proposals=ike,
                     children=[ChildConfig("net", [TrafficSelectorEntry.from_network(OUR_TS)],
                                           [TrafficSelectorEntry.from_network(THEIR_TS)], esp_proposals=esp)],
                     retransmit_timeout=1.0, retransmit_tries=3, local_auth="pubkey", remote_auth="pubkey",
                     credentials=Credentials(cert, key), cacerts=[ca.cert], rsa_pss=pss)


def cert_charon(net: NetnsPair, ca: CA, cert, key, their_id: str, our_id: str, ike: str, esp: str) -> Charon:
    """charon as gw-b with cert/key in swanctl's x509/ and private/, the CA in x509ca/; not started."""
    net.add_lo_address(net.b, f"{THEIR_HOST}/32")
    files = {"x509/gw-b.pem": pem_cert(cert), "private/gw-b.key": pem_key(key), "x509ca/ca.pem": pem_cert(ca.cert)}
    conf = swanctl_conf_pubkey(local=net.b_ip, remote=net.a_ip, local_id=their_id, remote_id=our_id,
                               cert="gw-b.pem", ike=ike, esp=esp, local_ts=THEIR_TS, remote_ts=OUR_TS)
    return Charon(net.b, conf, files=files)


@pytest.mark.parametrize("kind_ours,kind_theirs,ids,pss,scheme", [
    ("p256", "p256", ("gw-a.example", "gw-b.example"), False, "ECDSA_WITH_SHA256_DER"),
    ("rsa", "rsa", ("C=CH, O=ipsecgw test, CN=gw-a", "C=CH, O=ipsecgw test, CN=gw-b"), False,
     "RSA_EMSA_PKCS1_SHA2_256"),
    ("rsa", "p521", ("192.0.2.1", "192.0.2.2"), True, "RSA_EMSA_PSS"),
    ("ed25519", "p384", ("gw-a@example.org", "gw-b.example"), False, "ED25519"),
])
def test_certificates_with_charon_responder(kind_ours: str, kind_theirs: str, ids: tuple[str, str], pss: bool,
                                            scheme: str) -> None:
    """RFC 7427 signatures both ways: our cert and charon's come from one test CA; charon loads its
    cert, key and the CA from swanctl's x509/, private/ and x509ca/ directories."""
    ike, esp = "aes128gcm16-prfsha256-ecp256", "aes128gcm16"
    ca = CA("ipsecgw interop CA", "p256")
    our_cert, our_key = ca.issue("gw-a", kind_ours, [ids[0]] if "=" not in ids[0] else [])
    their_cert, their_key = ca.issue("gw-b", kind_theirs, [ids[1]] if "=" not in ids[1] else [])
    cfg = cert_cfg(ca, our_cert, our_key, ids[0], ids[1], ike, esp, pss)
    tag = f"ikeC{os.getpid() % 100000}"
    with NetnsPair(tag) as net:
        with cert_charon(net, ca, their_cert, their_key, ids[1], ids[0], ike, esp) as charon:
            res = in_netns(net.a, lambda: asyncio.run(_initiator_session(net.a_ip, net.b_ip, net.b, ike, esp, cfg)))
            listing = charon.list_sas()
            log = charon.log_text()
    events = res["events"]
    ike_up = next((e for e in events if isinstance(e, IkeSaEstablished)), None)
    assert ike_up is not None, f"events {events}\ncharon log:\n{log}"
    assert str(ike_up.remote_id) == ids[1]
    assert res["child"] is not None, f"events {events}\ncharon log:\n{log}"
    assert ike_up.spi_i.hex() in listing and "ESTABLISHED, IKEv2" in listing, listing
    # charon's log names the identity it authenticated with our certificate, and the scheme
    assert re.search(rf"authentication of '{re.escape(ids[0])}' with {scheme}\S* successful", log), log
    status, inner = res["esp_in"][0]
    assert status == Status.OK and inner.endswith(b"hello from charon side")
    assert res["reply"] is not None, f"no echo reply through charon\n{log}"


async def _cert_responder(a_ip: str, b_ip: str, charon: Charon, cfg: IkeConfig) -> list[object]:
    s = Session(a_ip, b_ip, charon, cfg)
    await s.ep.start()
    try:
        await s.swanctl("--initiate", "--child", "net", "--timeout", "15")
        await s.wait(lambda e: isinstance(e, ChildSaEstablished), "the CHILD SA charon initiated")
        await s.check()
        return s.events
    finally:
        s.ep.close()


@pytest.mark.parametrize("kind_ours,kind_theirs", [("p256", "rsa"), ("rsa", "p256")])
def test_certificates_with_charon_initiator(kind_ours: str, kind_theirs: str) -> None:
    """charon initiates with its certificate to our responder, which answers with its own."""
    ike, esp = "aes256-sha384-ecp384", "aes256-sha256"
    ca = CA("ipsecgw interop CA", "rsa")
    our_cert, our_key = ca.issue("gw-a", kind_ours, ["gw-a.example"])
    their_cert, their_key = ca.issue("gw-b", kind_theirs, ["gw-b.example"])
    cfg = cert_cfg(ca, our_cert, our_key, "gw-a.example", "gw-b.example", ike, esp)
    with NetnsPair(f"ikeR{os.getpid() % 100000}") as net:
        with cert_charon(net, ca, their_cert, their_key, "gw-b.example", "gw-a.example", ike, esp) as charon:
            events = in_netns(net.a, lambda: asyncio.run(_cert_responder(net.a_ip, net.b_ip, charon, cfg)))
            log = charon.log_text()
    up = next(e for e in events if isinstance(e, IkeSaEstablished))
    assert not up.initiator and str(up.remote_id) == "gw-b.example"
    assert "authentication of 'gw-a.example' with" in log and "successful" in log, log
