"""Control's side of the UDP 4500 reuseport group, as the steering tests (unit, and IPv6 in a namespace) see it."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def control_socket(port: int, host: str = HOST) -> socket.socket:
    """A socket in the reuseport group on host:port as control's is."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.setblocking(False)
    return s


def drain_control(s: socket.socket) -> list[bytes]:
    """What control's socket received, less the fastpath's probes (control ignores those: not IKE)."""
    out = []
    while True:
        try:
            d = s.recv(2000)
        except BlockingIOError:
            return out
        if not d.startswith(b"IPSGPROB"):
            out.append(d)
