"""The one UDP layer of control: non-blocking sockets the event loop watches with ``add_reader``.

Each wake-up drains up to ``READ_BATCH`` datagrams, so a busy responder pays the event loop once
per batch instead of once per datagram (as asyncio's datagram transport would); sends go straight to
``sendto``, and only a full send buffer queues them until the socket is writable.  The daemon
(``control.daemon``) and the IKE endpoint of the tools and interop tests (``control.ike_udp``) both
sit on it.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable

from control.ike.events import Address

__all__ = ["READ_BATCH", "UdpSocket", "Deliver"]

# Datagrams read per wake-up of one socket before the loop gets a turn again: a busy responder
# drains its queue in one callback instead of one event-loop iteration (epoll + handle) per datagram.
READ_BATCH = 64

Deliver = Callable[[bytes, int, Address], None]     # (payload, our port, peer)


class UdpSocket:
    """One bound non-blocking UDP socket and what waits for its send buffer."""

    def __init__(self, sock: socket.socket, local_ip: str, port: int):
        self.sock, self.local_ip, self.port = sock, local_ip, port
        self.pending: deque[tuple[bytes, Address]] = deque()
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def bind(cls, local_ip: str, port: int, *, reuse_port: bool = False) -> UdpSocket:
        """Raises OSError when the address cannot be bound."""
        family, _, _, _, addr = socket.getaddrinfo(local_ip, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        return cls(sock, local_ip, port)

    def watch(self, loop: asyncio.AbstractEventLoop, reader: Callable[[UdpSocket], None]) -> None:
        """Have the loop call ``reader(self)`` whenever the socket is readable."""
        self._loop = loop
        loop.add_reader(self.sock.fileno(), reader, self)

    def read_batch(self, deliver: Deliver) -> None:
        recv, port = self.sock.recvfrom, self.port
        for _ in range(READ_BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1        # a queued ICMP error and the like: nothing to read this time
                return
            deliver(data, port, addr if len(addr) == 2 else (addr[0], addr[1]))     # IPv6: 4-tuples

    def send(self, data: bytes, remote: Address) -> None:
        if self.pending:                # keep the order behind what already waits for the buffer
            self.pending.append((data, remote))
            return
        try:
            self.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            self.pending.append((data, remote))
            assert self._loop is not None
            self._loop.add_writer(self.sock.fileno(), self._writable)
        except OSError:
            self.errors += 1            # e.g. no route: a lost datagram, which retransmission covers

    def _writable(self) -> None:
        while self.pending:
            data, remote = self.pending[0]
            try:
                self.sock.sendto(data, remote)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1
            self.pending.popleft()
        assert self._loop is not None
        self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.sock.fileno())
            loop.remove_writer(self.sock.fileno())
        self.sock.close()
