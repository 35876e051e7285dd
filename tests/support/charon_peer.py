"""Our side of every strongSwan interop test and charon as its peer: the one connection (gw-a OUR_TS <->
gw-b THEIR_TS, PSK), charon configured for it in a NetnsPair's namespace b, the packets the tests send
through it, and ``Session``, our IkeUdpEndpoint as responder with what the tests look at."""

from __future__ import annotations

import asyncio
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

from cdefs.sa import Direction
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.events import ChildSaDeleted, ChildSaEstablished, IkeSaEstablished, IkeSaRekeyed
from control.ike.message import TrafficSelectorEntry
from control.ike_udp import IkeUdpEndpoint
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.status import Status
from support.netns_tools import inet_checksum
from support.packets import ipv4, udp
from support.strongswan import Charon, NetnsPair, swanctl_conf

PSK = "interop-psk-0123456789"
OUR_TS, THEIR_TS = "10.1.0.0/16", "10.2.0.0/16"
OUR_HOST, THEIR_HOST = "10.1.0.1", "10.2.0.1"


def our_config(ike: str, esp: str) -> IkeConfig:
    """Our side (gw-a, OUR_TS) of the one connection every interop test runs, with one child "net"."""
    return IkeConfig(Identity.from_string("gw-a.example"), PSK.encode(), Identity.from_string("gw-b.example"),
                     ike_proposals=ike, children=[ChildConfig("net", [TrafficSelectorEntry.from_network(OUR_TS)],
                                                              [TrafficSelectorEntry.from_network(THEIR_TS)],
                                                              esp_proposals=esp)],
                     retransmit_timeout=1.0, retransmit_tries=3)


def charon_peer(net: NetnsPair, ike: str, esp: str, charon_extra: str = "", root: Path | None = None,
                **conf_extra: str) -> Charon:
    """charon in net's namespace b as gw-b (THEIR_TS, with THEIR_HOST on its loopback); not started.
    charon_extra: lines for strongswan.conf's charon section; root: a chroot with another strongSwan
    (support.pq_root); conf_extra: swanctl_conf's conn/child_extra."""
    net.add_lo_address(net.b, f"{THEIR_HOST}/32")
    return Charon(net.b, swanctl_conf(local=net.b_ip, remote=net.a_ip, local_id="gw-b.example",
                                      remote_id="gw-a.example", psk=PSK, ike=ike, esp=esp,
                                      local_ts=THEIR_TS, remote_ts=OUR_TS, **conf_extra), charon_extra=charon_extra,
                  root=root)


def icmp_echo(src: str, dst: str, ident: int, seq: int, request: bool = True) -> bytes:
    body = struct.pack("!BBHHH", 8 if request else 0, 0, 0, ident, seq) + b"ipsecgw-interop" * 2
    body = body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]
    return ipv4(src, dst, 1, body)


def esp_in_udp(src: str, dst: str, esp: bytes) -> bytes:
    return ipv4(src, dst, 17, udp(src, dst, 4500, 4500, esp, checksum=False))


class Session:
    """Our responder endpoint plus what the tests look at: the current IKE SA and CHILD SAs."""

    def __init__(self, a_ip: str, b_ip: str, charon: Charon, cfg: IkeConfig):
        self.a_ip, self.b_ip, self.charon, self.cfg = a_ip, b_ip, charon, cfg
        self.events: list[object] = []
        self.esp_rx: list[bytes] = []
        self.ike = None
        self.children: dict[int, ChildSaEstablished] = {}
        self.ep = IkeUdpEndpoint(a_ip, (500, 4500), responder_config=cfg, on_event=self._on_event,
                                 on_esp=lambda data, remote: self.esp_rx.append(data))

    def _on_event(self, sa, ev) -> None:
        self.events.append(ev)
        if isinstance(ev, IkeSaEstablished):
            self.ike = sa
        elif isinstance(ev, IkeSaRekeyed) and not ev.redundant:
            self.ike = ev.new_sa
        elif isinstance(ev, ChildSaEstablished):
            self.children[ev.inbound.spi] = ev
        elif isinstance(ev, ChildSaDeleted):
            self.children.pop(ev.spi_in, None)

    async def wait(self, pred, what: str, timeout: float = 15.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((e for e in self.events if pred(e)), None)
            if hit is not None:
                return hit
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events {self.events}\n{self.charon.log_text()[-6000:]}")

    async def swanctl(self, *args: str) -> str:
        return await asyncio.to_thread(self.charon.swanctl, *args)

    def newest_child(self) -> ChildSaEstablished:
        assert self.children, "no CHILD SA"
        return list(self.children.values())[-1]

    async def check(self) -> None:
        """charon lists our IKE SPIs and our newest CHILD SPIs, and its ESP decrypts on our inbound SA."""
        listing = await self.swanctl("--list-sas")
        assert self.ike.spi_i.hex() in listing and self.ike.spi_r.hex() in listing, listing
        child = self.newest_child()
        ins = {int(x, 16) for x in re.findall(r"^\s+in\s+([0-9a-f]{8}),", listing, re.M)}
        outs = {int(x, 16) for x in re.findall(r"^\s+out\s+([0-9a-f]{8}),", listing, re.M)}
        assert child.outbound.spi in ins and child.inbound.spi in outs, listing
        await self.esp_check(child)

    async def esp_check(self, child: ChildSaEstablished) -> None:
        engine = create("best")
        engine.add_sa(0, child.inbound, Direction.IN)
        send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.bind(('{THEIR_HOST}', 0)); s.sendto(b'hello from charon side', ('{OUR_HOST}', 9))")
        try:
            for _ in range(30):
                self.esp_rx.clear()
                await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", self.charon.ns, sys.executable,
                                                         "-c", send], capture_output=True)
                await asyncio.sleep(0.1)
                for data in list(self.esp_rx):
                    if int.from_bytes(data[:4], "big") != child.inbound.spi:
                        continue        # charon may still be on the old SA for a moment
                    b = Batch(capacity=1)
                    b.append(esp_in_udp(self.b_ip, self.a_ip, data))
                    engine.inbound(b)
                    assert Status(int(b.status[0])) == Status.OK
                    assert b.packet(0).endswith(b"hello from charon side")
                    return
            raise AssertionError(f"no ESP from charon on our SA 0x{child.inbound.spi:08x}")
        finally:
            engine.close()
