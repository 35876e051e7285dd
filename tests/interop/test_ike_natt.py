"""NAT-T keepalives (RFC 3948 §2.3) through a real NAT: ours (the sans-IO core in ``IkeUdpEndpoint``)
sits behind an nftables masquerade in one namespace and initiates to charon 5.9.8 in another.  Our
NAT detection sees the NAT, and with nothing else to send, a one-byte 0xFF datagram leaves our NAT-T
port every ``keep_alive`` seconds; tcpdump on charon's side of the NAT sees them arrive from the NAT's
public address.  A keepalive sent to us is counted and otherwise ignored."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support.charon_peer import OUR_TS, PSK, THEIR_HOST, THEIR_TS, our_config
from support.netns_tools import Tcpdump
from support.strongswan import Charon, in_netns, swanctl_conf, unavailable_reason

from control.ike.events import ChildSaEstablished, IkeSaFailed, State
from control.ike_udp import IkeUdpEndpoint
from fastpath.pcapfile import PcapReader, ip_payload

REASON = unavailable_reason() or (None if shutil.which("nft") else "nft missing (apt install nftables)") \
    or (None if shutil.which("tcpdump") else "tcpdump missing")
pytestmark = [pytest.mark.skipif(REASON is not None, reason=f"NAT-T test: {REASON}"), pytest.mark.slow]

INNER, NAT_IN, NAT_OUT, OUTER = "10.99.0.2", "10.99.0.1", "198.18.0.1", "198.18.0.2"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class NatTopology:
    """``<tag>i`` (ours, INNER) - ``<tag>r`` (masquerading router) - ``<tag>o`` (charon, OUTER)."""

    def __init__(self, tag: str):
        self.i, self.r, self.o = f"{tag}i", f"{tag}r", f"{tag}o"
        self.dev_o = f"{tag}o0"[:15]

    def __enter__(self) -> NatTopology:
        for ns in (self.i, self.r, self.o):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        try:
            _run("ip", "link", "add", "nti0", "netns", self.i, "type", "veth", "peer", "name", "ntr0", "netns", self.r)
            _run("ip", "link", "add", "ntr1", "netns", self.r, "type", "veth", "peer", "name", self.dev_o,
                 "netns", self.o)
            for ns, dev, addr in ((self.i, "nti0", INNER), (self.r, "ntr0", NAT_IN), (self.r, "ntr1", NAT_OUT),
                                  (self.o, self.dev_o, OUTER)):
                _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", self.i, "route", "add", "default", "via", NAT_IN)
            _run("ip", "netns", "exec", self.r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            nft = ["ip", "netns", "exec", self.r, "nft"]
            _run(*nft, "add", "table", "ip", "nat")
            _run(*nft, "add chain ip nat post { type nat hook postrouting priority 100; }")
            _run(*nft, "add", "rule", "ip", "nat", "post", "oifname", "ntr1", "masquerade")
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.i, self.r, self.o):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _keepalives(pcap: Path) -> list[tuple[float, str, int, int]]:
    """(time, source, sport, dport) of every UDP datagram whose payload is the single byte 0xFF."""
    out = []
    with pcap.open("rb") as f:
        r = PcapReader(f)
        for rec in r:
            ip = ip_payload(r.linktype, rec.data)
            if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            hl = (ip[0] & 15) * 4
            sport, dport, length = struct.unpack_from("!HHH", ip, hl)
            if length == 9 and ip[hl + 8:hl + 9] == b"\xff":
                out.append((rec.ts_sec + rec.ts_frac / 1e6, socket.inet_ntoa(ip[12:16]), sport, dport))
    return out


async def _behind_nat(charon: Charon) -> dict:
    cfg = our_config("aes128gcm16-prfsha256-x25519", "aes128gcm16")
    cfg.keep_alive = 1.0
    events: list[object] = []
    ep = IkeUdpEndpoint(INNER, (500, 4500), on_event=lambda sa, ev: events.append(ev))
    await ep.start()
    try:
        sa = ep.initiate(cfg, OUTER)
        deadline = time.monotonic() + 15
        while not any(isinstance(e, ChildSaEstablished | IkeSaFailed) for e in events):
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        assert sa.state == State.ESTABLISHED and sa.nat_local, (sa.state, events)
        listing = await asyncio.to_thread(charon.swanctl, "--list-sas")
        await asyncio.sleep(3.6)        # idle: only keepalives should leave
        # a keepalive sent to us is counted and dropped before the IKE core
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"\xff", (INNER, 4500))
        s.close()
        await asyncio.sleep(0.2)
        return {"sent": sa.stats["keepalives_sent"], "received": ep.keepalives_received, "listing": listing,
                "not_ike": sa.stats["not_ike"], "state": sa.state}
    finally:
        ep.close()


def test_keepalives_through_a_real_nat() -> None:
    tag = f"nk{os.getpid() % 100000}"
    with NatTopology(tag) as net:
        subprocess.run(["ip", "-n", net.o, "addr", "add", f"{THEIR_HOST}/32", "dev", "lo"], check=True)
        charon = Charon(net.o, swanctl_conf(local=OUTER, remote="%any", local_id="gw-b.example",
                                            remote_id="gw-a.example", psk=PSK, ike="aes128gcm16-prfsha256-x25519",
                                            esp="aes128gcm16", local_ts=THEIR_TS, remote_ts=OUR_TS))
        pcap = Path(tempfile.mkdtemp(prefix="ipsecgw-natt-")) / "o.pcap"
        with charon:
            dump = Tcpdump(net.o, net.dev_o, pcap, "udp")
            try:
                res = in_netns(net.i, lambda: asyncio.run(_behind_nat(charon)))
            finally:
                dump.stop()
        seen = _keepalives(pcap)
        shutil.rmtree(pcap.parent, ignore_errors=True)
    # charon saw us at the NAT's public address, on NAT-T
    assert f"{NAT_OUT}[" in res["listing"], res["listing"]
    assert res["state"] == State.ESTABLISHED
    # on the wire: from the NAT's address to charon's port 4500, about one per second of idle time
    assert len(seen) >= 3, seen
    assert all(src == NAT_OUT and dport == 4500 for _, src, _, dport in seen), seen
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    assert all(0.7 < g < 1.6 for g in gaps), gaps
    assert res["sent"] >= len(seen)
    assert res["received"] == 1 and res["not_ike"] == 0
