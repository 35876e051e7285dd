"""A bounded flood of IKE datagrams from spoofed source addresses (raw sockets, IPv4 or IPv6), sent from
inside a network namespace at a fixed rate for a fixed time: what tests/e2e/test_daemon_flood*.py aim at
one daemon while its legitimate peer connects."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from control.ike.sa import IkeSA
from support.ike_pair import cfgs
from support.netns_tools import inet_checksum
from support.strongswan import in_netns


def init_template(dst: str) -> bytes:
    """A real IKE_SA_INIT request (SA, KE, Nonce) from our initiator core, addressed to ``dst``."""
    ca, _ = cfgs()
    i = IkeSA(ca, initiator=True, local=("2001:db8::1" if ":" in dst else "198.18.0.1", 500), remote=(dst, 500))
    i.initiate(0.0)
    return i.datagrams_to_send()[0].data


def udp_packet(src: str, dst: str, payload: bytes, sport: int = 500, dport: int = 500) -> bytes:
    """An IPv4 or IPv6 packet with one UDP datagram, for a raw socket that takes the IP header."""
    length = 8 + len(payload)
    if ":" not in dst:
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload      # checksum 0: none (IPv4 only)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, random.getrandbits(16), 0, 64, socket.IPPROTO_UDP,
                         0, socket.inet_aton(src), socket.inet_aton(dst))
        return ip + udp             # the kernel fills in the IP checksum with IP_HDRINCL
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    pseudo = s6 + d6 + struct.pack("!IxxxB", length, socket.IPPROTO_UDP)
    # mandatory in IPv6, and a computed 0 is sent as 0xFFFF (RFC 8200 §8.1)
    csum = inet_checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    ip6 = struct.pack("!IHBB", 6 << 28, length, socket.IPPROTO_UDP, 64) + s6 + d6
    return ip6 + struct.pack("!HHHH", sport, dport, length, csum) + payload


def spoofed_ipv4() -> str:
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"


def one_64(prefix: str = "2001:db8:aaaa:1::/64") -> Callable[[], str]:
    """Random addresses in one IPv6 /64: what one host (or one customer) can send from."""
    base = int(ipaddress.IPv6Network(prefix).network_address)
    return lambda: str(ipaddress.IPv6Address(base | random.getrandbits(64) | 1))


def many_prefixes() -> str:
    """An address in a random /64 of 2001:db8::/32."""
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (random.getrandbits(32) << 64) | 1))


class Flood:
    """Send ``rate`` datagrams a second for ``seconds`` from namespace ``ns`` to ``dst``:500, on a thread.
    Each datagram's payload is ``kinds[n % len(kinds)][1]()`` from ``source()``; ``sent`` counts by kind."""

    def __init__(self, ns: str, dst: str, kinds: Sequence[tuple[str, Callable[[], bytes]]],
                 source: Callable[[], str], *, rate: int = 2000, seconds: float = 2.0):
        self.ns, self.dst, self.kinds, self.source = ns, dst, list(kinds), source
        self.rate, self.seconds = rate, seconds
        self.sent: Counter[str] = Counter()
        self._thread = threading.Thread(target=in_netns, args=(ns, self._run), name=f"flood-{ns}")

    def start(self) -> Flood:
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def _run(self) -> None:
        v6 = ":" in self.dst
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        if not v6:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)     # IPv6 IPPROTO_RAW implies it
        to = (self.dst, 0, 0, 0) if v6 else (self.dst, 0)
        try:
            start, n = time.monotonic(), 0
            while (el := time.monotonic() - start) < self.seconds:
                while n < el * self.rate:
                    name, make = self.kinds[n % len(self.kinds)]
                    s.sendto(udp_packet(self.source(), self.dst, make()), to)
                    self.sent[name] += 1
                    n += 1
                time.sleep(0.005)
        finally:
            s.close()
