"""Interop of our sans-IO IKEv1 core with a live strongSwan 5.9.8 charon (``version = 1``, PSK,
kernel-libipsec) in namespaces: a small UDP driver (support.ikev1_driver) runs our Ikev1SA in namespace a.

charon must list the ISAKMP SA with our cookies and the quick mode SA with our SPIs (its in SPI is our
out SPI), and the keys must agree: our outbound SA's ESP (an ICMP echo request to charon's protected
host) is accepted by charon, whose echo reply comes back ESP-in-UDP and decrypts on our inbound SA.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from support.charon_peer import OUR_HOST, OUR_TS, PSK, THEIR_HOST, THEIR_TS, esp_in_udp, icmp_echo
from support.ikev1_driver import UdpDriver, swanctl_conf_v1
from support.pki import CA, pem_cert, pem_key
from support.strongswan import SWANCTL, Charon, NetnsPair, in_netns, interop_marks

from cdefs.sa import Direction
from control.ike.certs import Credentials
from control.ike.config import Identity
from control.ike.events import ChildSaDeleted, ChildSaEstablished
from control.ike.ts_payload import TrafficSelectorEntry
from control.ikev1.config import Ikev1Config
from control.ikev1.events import DpdAck, IsakmpSaDeleted, IsakmpSaEstablished
from control.ikev1.sa import Ikev1SA
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.status import Status

pytestmark = interop_marks()


class Pki:
    """A test CA (RSA) and certificates of one key kind for both gateways, named by their FQDN IDs."""

    def __init__(self, kind: str) -> None:
        self.ca = CA("ipsecgw IKEv1 interop CA", "rsa")
        self.ours = self.ca.issue("gw-a", kind, ["gw-a.example"])
        self.theirs = self.ca.issue("gw-b", kind, ["gw-b.example"])


def _our_config(ike: str, esp: str, aggressive: bool, pki: Pki | None = None) -> Ikev1Config:
    certs = dict(auth="pubkey", credentials=Credentials(*pki.ours), cacerts=[pki.ca.cert]) if pki else {}
    return Ikev1Config(Identity.from_string("gw-a.example"), PSK.encode(), Identity.from_string("gw-b.example"),
                       ike, esp, [TrafficSelectorEntry.from_network(OUR_TS)],
                       [TrafficSelectorEntry.from_network(THEIR_TS)], aggressive=aggressive,
                       retransmit_timeout=1.0, retransmit_tries=3, **certs)


def _charon(net: NetnsPair, ike: str, esp: str, aggressive: bool, pki: Pki | None = None,
            conn_extra: str = "", charon_extra: str = "") -> Charon:
    net.add_lo_address(net.b, f"{THEIR_HOST}/32")
    # charon refuses to answer aggressive mode with a PSK unless told it may (the PSK caveat, docs/ikev1.md)
    extra = "i_dont_care_about_security_and_use_aggressive_mode_psk = yes" if aggressive else ""
    extra += "\n    " + charon_extra
    files = {"x509/gw-b.pem": pem_cert(pki.theirs[0]), "private/gw-b.key": pem_key(pki.theirs[1]),
             "x509ca/ca.pem": pem_cert(pki.ca.cert)} if pki else None
    return Charon(net.b, swanctl_conf_v1(local=net.b_ip, remote=net.a_ip, local_id="gw-b.example",
                                         remote_id="gw-a.example", psk=PSK, ike=ike, esp=esp, local_ts=THEIR_TS,
                                         remote_ts=OUR_TS, aggressive=aggressive, cert="gw-b.pem" if pki else "",
                                         conn_extra=conn_extra),
                  charon_extra=extra, files=files)


def _ping_through(drv: UdpDriver, child: ChildSaEstablished, b_ip: str, a_ip: str) -> bytes | None:
    """An echo request on our outbound SA to charon's host; its reply decrypted on our inbound SA."""
    engine = create("best")
    try:
        engine.add_sa(0, child.inbound, Direction.IN)
        engine.add_sa(1, child.outbound, Direction.OUT)
        for seq in range(1, 21):        # charon installs its route into ipsec0 just after the SA: retry
            drv.esp_rx.clear()
            b = Batch(capacity=1)
            b.append(icmp_echo(OUR_HOST, THEIR_HOST, 0x4242, seq), 1)
            engine.outbound(b)
            assert Status(int(b.status[0])) == Status.OK
            drv.send_raw(b.packet(0)[28:], 4500, (b_ip, 4500))     # outer IPv4 + UDP off: the socket adds them
            drv.pump(lambda: bool(drv.esp_rx), 0.5)
            for data in drv.esp_rx:
                b = Batch(capacity=1)
                b.append(esp_in_udp(b_ip, a_ip, data))
                engine.inbound(b)
                if Status(int(b.status[0])) == Status.OK:
                    return b.packet(0)
        return None
    finally:
        engine.close()


def _session(net: NetnsPair, charon: Charon, ike: str, esp: str, aggressive: bool, we_initiate: bool,
             pki: Pki | None = None) -> dict:
    cfg = _our_config(ike, esp, aggressive, pki)
    out: dict = {}

    def body() -> None:
        if we_initiate:
            sa = Ikev1SA(cfg, initiator=True, local=(net.a_ip, 500), remote=(net.b_ip, 500))
            drv = UdpDriver(net.a_ip, sa)
            sa.initiate(time.monotonic())
            proc = None
        else:
            drv = UdpDriver(net.a_ip, responder=cfg)
            env = dict(os.environ, SWANCTL_DIR=str(charon.dir))
            proc = subprocess.Popen(["ip", "netns", "exec", net.b, SWANCTL, "--initiate", "--child", "net",
                                     "--timeout", "20", "--uri", f"unix://{charon.vici}"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            drv.pump(lambda: any(isinstance(e, ChildSaEstablished) for e in drv.events), 20)
            out["events"] = list(drv.events)
            child = next((e for e in drv.events if isinstance(e, ChildSaEstablished)), None)
            out["listing"] = charon.list_sas() if child else ""
            out["reply"] = _ping_through(drv, child, net.b_ip, net.a_ip) if child else None
            if child is not None:
                # delete from our side: charon must drop both SAs
                drv.sa.delete()
                drv.pump(lambda: False, 1.0)
                out["deleted"] = [e for e in drv.sa.events() + drv.events if isinstance(e, IsakmpSaDeleted)]
                deadline = time.monotonic() + 10
                while "ESTABLISHED" in charon.list_sas() and time.monotonic() < deadline:
                    time.sleep(0.2)
                out["after_delete"] = charon.list_sas()
            out["stats"] = dict(drv.sa.stats) if drv.sa else {}
        finally:
            drv.close()
            if proc is not None:
                proc.kill()
                proc.wait()

    in_netns(net.a, body)
    return out


def _check(res: dict, charon: Charon, we_initiate: bool, aggressive: bool) -> None:
    log = charon.log_text()[-8000:]
    events = res["events"]
    up = next((e for e in events if isinstance(e, IsakmpSaEstablished)), None)
    assert up is not None, f"events {events}, stats {res.get('stats')}\ncharon log:\n{log}"
    child = next((e for e in events if isinstance(e, ChildSaEstablished)), None)
    assert child is not None, f"events {events}, stats {res.get('stats')}\ncharon log:\n{log}"
    assert up.initiator == we_initiate and up.aggressive == aggressive
    listing = res["listing"]
    # charon: the ISAKMP SA is IKEv1 with our cookies, the quick mode SA has our SPIs the other way round
    assert "ESTABLISHED, IKEv1" in listing, listing
    assert up.cookie_i.hex() in listing and up.cookie_r.hex() in listing, listing
    assert "INSTALLED, TUNNEL-in-UDP" in listing, listing
    spi_in = re.search(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)
    spi_out = re.search(r"^\s+out\s+([0-9a-f]{8}),", listing, re.M)
    assert spi_in and spi_out, listing
    assert int(spi_in.group(1), 16) == child.outbound.spi
    assert int(spi_out.group(1), 16) == child.inbound.spi
    assert OUR_TS in listing and THEIR_TS in listing, listing
    assert up.nat_remote            # charon with encap = yes fakes its NAT-D: we floated to 4500
    # the keys agree both ways: charon took our ESP and its answer decrypts on our inbound SA
    reply = res["reply"]
    assert reply is not None, f"no echo reply through charon\n{log}"
    assert reply[9] == 1 and reply[20] == 0 and reply[24:26] == b"\x42\x42"
    assert reply[12:16] == bytes([10, 2, 0, 1]) and reply[16:20] == bytes([10, 1, 0, 1])
    # our delete took both SAs down on charon's side
    assert res["deleted"], res
    assert "ESTABLISHED" not in res["after_delete"], res["after_delete"]


# each case: our IKE and ESP proposals, charon's (the same when None), aggressive mode, the suite expected
@pytest.mark.parametrize("ike,esp,theirs,aggressive,expect", [
    ("aes256-sha256-modp2048", "aes128-sha256", None, False, (256, 4, 14)),
    ("aes128-sha1-ecp256", "aes256gcm16-modp2048", None, False, (128, 2, 19)),     # ESP with PFS
    ("aes256-sha384-ecp384", "aes256-sha256", None, True, (256, 5, 20)),
    # two proposal sets offered, charon takes only the second: its choice must be honoured
    ("aes256-sha512-ecp384,aes128-sha256-modp2048", "aes256gcm16,aes128-sha256",
     ("aes128-sha256-modp2048", "aes128-sha256"), False, (128, 4, 14)),
])
def test_our_initiator_with_charon(ike: str, esp: str, theirs: tuple[str, str] | None, aggressive: bool,
                                   expect: tuple[int, int, int]) -> None:
    tag = f"v1i{os.getpid() % 100000}"
    c_ike, c_esp = theirs or (ike, esp)
    with NetnsPair(tag) as net, _charon(net, c_ike, c_esp, aggressive) as charon:
        res = _session(net, charon, ike, esp, aggressive, we_initiate=True)
        _check(res, charon, True, aggressive)
    up = next(e for e in res["events"] if isinstance(e, IsakmpSaEstablished))
    assert (up.suite.key_bits, up.suite.hash, up.suite.group) == expect


@pytest.mark.parametrize("ike,esp,theirs,aggressive,expect", [
    ("aes256-sha256-modp2048", "aes128-sha256-modp2048", None, False, (256, 4, 14)),  # ESP with PFS
    ("aes128-sha256-modp2048", "aes128-sha256", None, True, (128, 4, 14)),
    # charon offers two sets, we accept only its second
    ("aes256-sha256-ecp256", "aes256-sha256", ("aes128-sha1-modp2048,aes256-sha256-ecp256",
                                               "aes128-sha256,aes256-sha256"), False, (256, 4, 19)),
])
def test_charon_initiator_with_our_responder(ike: str, esp: str, theirs: tuple[str, str] | None, aggressive: bool,
                                             expect: tuple[int, int, int]) -> None:
    tag = f"v1r{os.getpid() % 100000}"
    c_ike, c_esp = theirs or (ike, esp)
    with NetnsPair(tag) as net, _charon(net, c_ike, c_esp, aggressive) as charon:
        res = _session(net, charon, ike, esp, aggressive, we_initiate=False)
        _check(res, charon, False, aggressive)
    up = next(e for e in res["events"] if isinstance(e, IsakmpSaEstablished))
    assert (up.suite.key_bits, up.suite.hash, up.suite.group) == expect


@pytest.mark.parametrize("kind,method", [("rsa", 3), ("p256", 9), ("p384", 10)])
@pytest.mark.parametrize("we_initiate", [True, False])
def test_certificates_with_charon(we_initiate: bool, kind: str, method: int) -> None:
    """Main mode with RSA (RFC 2409 §5.1) or ECDSA (RFC 4754) signatures, each side initiating: both
    certificates from one test CA, charon's from swanctl's x509/ and private/, ours in our Credentials;
    each side sends its CERT."""
    ike, esp = "aes256-sha256-modp2048", "aes128-sha256"
    pki = Pki(kind)
    tag = f"v1c{os.getpid() % 100000}"
    with NetnsPair(tag) as net, _charon(net, ike, esp, False, pki) as charon:
        res = _session(net, charon, ike, esp, False, we_initiate=we_initiate, pki=pki)
        _check(res, charon, we_initiate, False)
        up = next(e for e in res["events"] if isinstance(e, IsakmpSaEstablished))
        assert up.suite.auth == method      # the key's signature method was negotiated, not a PSK


_DPD_ACK_PARSED = re.compile(r"parsed INFORMATIONAL_V1 \w+ \d+ \[ HASH N\(DPD_ACK\) \]")


def _spis(listing: str) -> tuple[set[int], set[int]]:
    ins = {int(x, 16) for x in re.findall(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)}
    outs = {int(x, 16) for x in re.findall(r"^\s+out\s+([0-9a-f]{8}),", listing, re.M)}
    return ins, outs


def test_quick_mode_rekey_by_each_side_and_dpd_both_ways() -> None:
    """Over one ISAKMP SA with charon: we rekey the quick mode SA (new pair, then our Delete of the old),
    charon rekeys it (`swanctl --rekey`: its quick mode to our responder side, then its Delete of the old
    pair), ESP runs
    on each new pair; our R-U-THERE is acknowledged and charon's (dpd_delay) is answered; then charon
    deletes the ISAKMP SA and its quick mode pair."""
    ike, esp = "aes256-sha256-modp2048", "aes128-sha256-modp2048"
    tag = f"v1k{os.getpid() % 100000}"
    # IKEv1 charon keeps a rekeyed pair until it expires unless delete_rekeyed: with it, its Delete follows
    with NetnsPair(tag) as net, _charon(net, ike, esp, False, conn_extra="dpd_delay = 1s",
                                        charon_extra="delete_rekeyed = yes") as charon:
        out: dict = {}

        def body() -> None:
            sa = Ikev1SA(_our_config(ike, esp, False), initiator=True, local=(net.a_ip, 500),
                         remote=(net.b_ip, 500))
            drv = UdpDriver(net.a_ip, sa)
            sa.initiate(time.monotonic())

            def kids() -> list[ChildSaEstablished]:
                return [e for e in drv.events if isinstance(e, ChildSaEstablished)]
            try:
                assert drv.pump(lambda: len(kids()) == 1, 20), (drv.events, sa.stats)
                first = kids()[0]
                # ours
                sa.rekey_child(first.inbound.spi, time.monotonic())
                assert drv.pump(lambda: len(kids()) == 2, 15), (drv.events, sa.stats)
                ours = kids()[1]
                deadline = time.monotonic() + 10
                while first.outbound.spi in _spis(charon.list_sas())[0] and time.monotonic() < deadline:
                    drv.pump(lambda: False, 0.2)
                out["after_ours"] = charon.list_sas()
                out["ours"], out["first"] = ours, first
                out["ping_ours"] = _ping_through(drv, ours, net.b_ip, net.a_ip)
                # charon's
                subprocess.run(["ip", "netns", "exec", net.b, SWANCTL, "--rekey", "--child", "net", "--uri",
                                f"unix://{charon.vici}"], capture_output=True, timeout=10)
                assert drv.pump(lambda: len(kids()) == 3 and any(
                    isinstance(e, ChildSaDeleted) and e.spi_in == ours.inbound.spi for e in drv.events), 15), \
                    (drv.events, sa.stats)
                out["theirs"] = kids()[2]
                out["after_theirs"] = charon.list_sas()
                out["ping_theirs"] = _ping_through(drv, kids()[2], net.b_ip, net.a_ip)
                # DPD: ours acknowledged; charon's (1 s without traffic from us) answered
                seq = sa.dpd()
                assert drv.pump(lambda: any(isinstance(e, DpdAck) and e.sequence == seq for e in drv.events), 10)
                out["dpd_ours_acked"] = True
                drv.pump(lambda: _DPD_ACK_PARSED.search(charon.log_text()) is not None, 10)
                out["children"] = [c.inbound.spi for c in sa.children]
                out["dpd_answered"] = sa.stats["dpd_answered"]
                # charon deletes: its Deletes of the quick mode pair and of the ISAKMP SA reach us
                subprocess.run(["ip", "netns", "exec", net.b, SWANCTL, "--terminate", "--ike", "peer", "--timeout",
                                "5", "--uri", f"unix://{charon.vici}"], capture_output=True, timeout=15)
                drv.pump(lambda: any(isinstance(e, IsakmpSaDeleted) for e in drv.events), 10)
                out["final"] = [e for e in drv.events if isinstance(e, IsakmpSaDeleted | ChildSaDeleted)]
                out["state"] = sa.state
            finally:
                drv.close()

        in_netns(net.a, body)
        log = charon.log_text()
    first, ours, theirs = out["first"], out["ours"], out["theirs"]
    assert ours.rekey_of == first.inbound.spi and ours.inbound.spi != first.inbound.spi
    ins, outs = _spis(out["after_ours"])
    assert ours.outbound.spi in ins and ours.inbound.spi in outs and first.outbound.spi not in ins, out["after_ours"]
    assert out["ping_ours"] is not None and out["ping_theirs"] is not None
    ins, outs = _spis(out["after_theirs"])
    assert theirs.outbound.spi in ins and ours.outbound.spi not in ins, out["after_theirs"]
    assert not theirs.initiator         # charon ran that quick mode
    assert out["children"] == [theirs.inbound.spi]
    final = out["final"]
    assert any(isinstance(e, ChildSaDeleted) and e.spi_in == theirs.inbound.spi for e in final), final
    assert isinstance(final[-1], IsakmpSaDeleted) and out["state"] == "dead", final
    # charon's R-U-THERE got our R-U-THERE-ACK, which charon parsed
    assert out["dpd_answered"] >= 1 and _DPD_ACK_PARSED.search(log), log[-4000:]
