"""Small traffic tools run inside a network namespace (``python tests/netns_tools.py CMD ...``).

ping: ICMP echo at a fixed interval on a raw socket; prints one JSON object with the send times and
the sequence numbers answered, so a test can measure the longest outage exactly.
tcp-server / tcp-client: a byte stream with a SHA-256 check.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import struct
import sys
import time


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(dst: str, count: int, interval: float, size: int = 56, wait: float = 1.0) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    start = time.monotonic()
    end = start + count * interval + wait
    seq = 0
    next_send = start
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            payload = bytes(size)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, _csum(hdr + payload), ident, seq) + payload
            s.sendto(pkt, (dst, 0))
            sent[seq] = now - start
            seq += 1
            next_send += interval
        if now >= end:
            break
        r, _, _ = select.select([s], [], [], max(0.0, min(next_send, end) - now) if seq < count else end - now)
        if r:
            data = s.recv(65535)
            ihl = (data[0] & 15) * 4
            t, _, _, i, sq = struct.unpack_from("!BBHHH", data, ihl)
            if t == 0 and i == ident:
                got.setdefault(sq, time.monotonic() - start)
    print(json.dumps({"sent": sent, "got": sorted(got)}))


def tcp_server(port: int) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    print("listening", flush=True)
    c, _ = ls.accept()
    h = hashlib.sha256()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()


def tcp_client(dst: str, port: int, nbytes: int) -> None:
    data = os.urandom(nbytes)
    c = socket.create_connection((dst, port), timeout=20)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        reply += d
    print(json.dumps({"sent": nbytes, "sha256": hashlib.sha256(data).hexdigest(), "reply": reply.decode()}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ping":
        ping(args[0], int(args[1]), float(args[2]), *(int(a) for a in args[3:4]))
    elif cmd == "tcp-server":
        tcp_server(int(args[0]))
    elif cmd == "tcp-client":
        tcp_client(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
