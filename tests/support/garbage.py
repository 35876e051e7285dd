"""Bursts of garbage at a gateway, from inside a network namespace on a raw IPv4 socket (root): random bytes
to the IKE ports 500 and 4500 from spoofed sources, raw ESP (IP protocol 50) with random SPIs, and raw ESP
and ESP-in-UDP with an SPI the gateway really has (random sequence number and body), spoofed from the peer's
own address as an attacker on the path would.  Built on support.ike_flood's packets; what the soak
(tests/soak/) throws at each gateway now and then."""

from __future__ import annotations

import os
import random
import socket
import struct
from collections import Counter

from support.ike_flood import spoofed_ipv4, udp_packet
from support.strongswan import in_netns


def esp_packet(src: str, dst: str, body: bytes) -> bytes:
    """An IPv4 packet carrying ``body`` as ESP; the kernel fills in the checksum with IP_HDRINCL."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), random.getrandbits(16), 0, 64, 50, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + body


def _noise(lo: int, hi: int) -> bytes:
    return os.urandom(random.randrange(lo, hi))


def garbage_burst(ns: str, dst: str, count: int, *, known_spis: tuple[int, ...] = (),
                  peer: str | None = None) -> Counter[str]:
    """``count`` packets of each kind from namespace ``ns`` at ``dst`` (IPv4); for each of ``known_spis``,
    ESP and ESP-in-UDP with that SPI from ``peer`` (a spoofed source if None).  Counts by kind."""
    def send() -> Counter[str]:
        sent: Counter[str] = Counter()
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        try:
            for _ in range(count):
                kinds = [("ike_500", udp_packet(spoofed_ipv4(), dst, _noise(1, 400), 500, 500)),
                         ("ike_4500", udp_packet(spoofed_ipv4(), dst, _noise(1, 400), 4500, 4500)),
                         ("esp_unknown_spi", esp_packet(spoofed_ipv4(), dst, _noise(8, 400)))]
                for spi in known_spis:
                    body = struct.pack("!II", spi, random.getrandbits(32)) + _noise(16, 400)
                    src = peer or spoofed_ipv4()
                    kinds += [("esp_known_spi", esp_packet(src, dst, body)),
                              ("esp_udp_known_spi", udp_packet(src, dst, body, 4500, 4500))]
                for kind, pkt in kinds:
                    s.sendto(pkt, (dst, 0))
                    sent[kind] += 1
        finally:
            s.close()
        return sent
    return in_netns(ns, send)  # type: ignore[return-value]
