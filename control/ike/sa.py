"""The IKE SA state machine, sans-IO.

An ``IkeSA`` is fed ``receive_datagram(data, local_port, remote, now)`` and
``handle_timer(now)``; it never touches a socket or a clock.  What it wants
sent comes out of ``datagrams_to_send()`` (UDP payloads, the non-ESP marker
already added when NAT-T is in use) and what happened out of ``next_event()``.

Exchanges are tasks (``control.ike.tasks``).  This module is the task manager:
it owns Message IDs, the one outstanding request and its retransmission, the
cached response for retransmitted requests, and SK protection.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections import Counter, deque
from dataclasses import dataclass, field

from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.constants import ExchangeType, Flag, Notify, PayloadType
from control.ike.crypto import CryptoError, IkeKeys, IkeSuite, KeyExchange, SKCipher
from control.ike.message import (
    Message,
    NotifyPayload,
    ParseError,
    Payload,
    SKPayload,
    TrafficSelectorEntry,
    parse_header,
)
from control.ike.proposals import EspSuite
from fastpath.sa import SA

NON_ESP_MARKER = b"\0\0\0\0"
NATT_KEEPALIVE = b"\xff"

Address = tuple[str, int]


@dataclass
class Datagram:
    data: bytes                 # UDP payload, marker included on the NAT-T port
    local_port: int             # which of our sockets sends it
    remote: Address


# -- events --------------------------------------------------------------------------

@dataclass
class IkeSaEstablished:
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    suite: IkeSuite
    local_id: Identity
    remote_id: Identity
    remote: Address
    nat_local: bool
    nat_remote: bool


@dataclass
class ChildSaEstablished:
    """A CHILD SA pair: install ``inbound`` and ``outbound`` (fastpath SAs) in the data plane."""

    name: str
    inbound: SA
    outbound: SA
    suite: EspSuite
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]

    def __repr__(self) -> str:          # SAs carry keys
        return (f"ChildSaEstablished({self.name!r}, in=0x{self.inbound.spi:08x}, out=0x{self.outbound.spi:08x}, "
                f"{self.suite.enc})")


@dataclass
class ChildSaFailed:
    name: str
    notify: int
    reason: str


@dataclass
class IkeSaFailed:
    notify: int                 # the error notify that ended it (0 when none applies)
    reason: str


class State(enum.Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    DEAD = "dead"


class IkeError(Exception):
    """A task refuses a message; ``notify`` is the error to report (and to send, as a responder)."""

    def __init__(self, notify: int, reason: str, data: bytes = b""):
        super().__init__(reason)
        self.notify = notify
        self.data = data


@dataclass
class _Outstanding:
    message_id: int
    exchange: int
    datagram: Datagram
    task: object
    next_send: float
    tries: int = 0


@dataclass
class ChildState:
    """What the SA remembers of a CHILD SA it negotiated."""

    config: ChildConfig
    spi_in: int
    spi_out: int = 0
    suite: EspSuite | None = None
    local_ts: list[TrafficSelectorEntry] = field(default_factory=list)
    remote_ts: list[TrafficSelectorEntry] = field(default_factory=list)


def random_spi() -> bytes:
    while True:
        spi = os.urandom(8)
        if spi != bytes(8):
            return spi


def random_esp_spi() -> int:
    while True:
        spi = int.from_bytes(os.urandom(4), "big")
        if spi >= 256:
            return spi


def strip_natt(data: bytes, natt: bool) -> bytes | None:
    """The IKE message in a UDP payload; on the NAT-T port None for keepalives and ESP."""
    if not natt:
        return data
    if len(data) >= 4 and data[:4] == NON_ESP_MARKER:
        return data[4:]
    return None


class IkeSA:
    """One IKE SA, initiator or responder.  Create initiators with ``initiate``, responders with
    ``IkeSA(config, initiator=False, ...)`` then feed them the IKE_SA_INIT request."""

    def __init__(self, config: IkeConfig, *, initiator: bool, local: Address, remote: Address):
        self.config = config
        self.initiator = initiator
        self.local_ip = ipaddress.ip_address(local[0])
        self.local_port = local[1]
        self.remote: Address = remote
        self.state = State.CREATED
        self.spi_i = random_spi() if initiator else b""
        self.spi_r = bytes(8) if initiator else random_spi()
        # negotiation results, filled in by the tasks
        self.suite: IkeSuite | None = None
        self.keys: IkeKeys | None = None
        self.ke: KeyExchange | None = None
        self.nonce_i = b""
        self.nonce_r = b""
        self.init_request = b""         # IKE_SA_INIT messages as sent, signed in AUTH
        self.init_response = b""
        self.nat_local = False
        self.nat_remote = False
        self.remote_identity: Identity | None = None
        self.children: list[ChildState] = []
        self._cipher_out: SKCipher | None = None
        self._cipher_in: SKCipher | None = None
        # task manager
        self._tasks: deque = deque()
        self._outstanding: _Outstanding | None = None
        self._next_mid = 0              # our next request
        self._peer_mid = 0              # the peer's next request
        self._last_response: tuple[int, bytes, list[Datagram]] | None = None
        self._out: list[Datagram] = []
        self._events: deque = deque()
        self.stats: Counter[str] = Counter()

    # -- public sans-IO interface ----------------------------------------------------

    def initiate(self, now: float, children: list[ChildConfig] | None = None) -> None:
        """Queue IKE_SA_INIT and IKE_AUTH (with the first CHILD SA) and send the first request."""
        from control.ike.tasks.ike_auth import IkeAuthInitiator
        from control.ike.tasks.ike_init import IkeInitInitiator

        if not self.initiator or self.state != State.CREATED:
            raise RuntimeError("initiate() is for a fresh initiator SA")
        self.state = State.CONNECTING
        kids = list(self.config.children if children is None else children)
        self._tasks.append(IkeInitInitiator())
        self._tasks.append(IkeAuthInitiator(kids[0] if kids else None))
        self._start_next(now)

    def receive_datagram(self, data: bytes, local_port: int, remote: Address, now: float) -> None:
        if self.state == State.DEAD:
            return
        natt = local_port == self.config.local_natt_port and local_port != self.config.local_port
        msg_bytes = strip_natt(data, natt)
        if msg_bytes is None:
            self.stats["not_ike"] += 1
            return
        try:
            hdr = parse_header(msg_bytes)
        except ParseError:
            self.stats["malformed"] += 1
            return
        if hdr.flags & Flag.RESPONSE:
            self._on_response(msg_bytes, hdr.message_id, hdr.exchange, remote, now)
        else:
            self._on_request(msg_bytes, hdr.message_id, hdr.exchange, local_port, remote, now)

    def handle_timer(self, now: float) -> None:
        o = self._outstanding
        if o is None or self.state == State.DEAD or now < o.next_send:
            return
        if o.tries >= self.config.retransmit_tries:
            self._fail(0, f"no response to {ExchangeType(o.exchange).name} after {o.tries + 1} transmissions")
            return
        o.tries += 1
        self.stats["retransmits"] += 1
        self._out.append(o.datagram)
        o.next_send = now + self.config.retransmit_timeout * self.config.retransmit_base ** o.tries

    def get_timer(self) -> float | None:
        return self._outstanding.next_send if self._outstanding and self.state != State.DEAD else None

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else None

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    # -- helpers the tasks use ---------------------------------------------------------

    @property
    def use_natt(self) -> bool:
        """Float to the NAT-T ports once either side is behind a NAT (RFC 7296 §2.23)."""
        return self.nat_local or self.nat_remote

    @property
    def esp_ports(self) -> tuple[int, int]:
        """(our, the peer's) UDP ports for ESP-in-UDP: the NAT-T ports this SA floated to."""
        if self.initiator:
            return self.config.local_natt_port, self.config.remote_natt_port
        return self.local_port, self.remote[1]

    def emit(self, event: object) -> None:
        self._events.append(event)

    def set_keys(self, keys: IkeKeys) -> None:
        assert self.suite is not None
        self.keys = keys
        mine = (keys.sk_ei, keys.sk_ai) if self.initiator else (keys.sk_er, keys.sk_ar)
        theirs = (keys.sk_er, keys.sk_ar) if self.initiator else (keys.sk_ei, keys.sk_ai)
        self._cipher_out = SKCipher(self.suite, *mine)
        self._cipher_in = SKCipher(self.suite, *theirs)

    def _flags(self, response: bool) -> int:
        return (Flag.INITIATOR if self.initiator else 0) | (Flag.RESPONSE if response else 0)

    def _encode(self, exchange: int, message_id: int, response: bool, payloads: list[Payload]) -> bytes:
        msg = Message(self.spi_i, self.spi_r, exchange, self._flags(response), message_id)
        if exchange == ExchangeType.IKE_SA_INIT:
            msg.payloads = payloads
            return msg.serialize()
        assert self._cipher_out is not None
        return self._cipher_out.protect(msg, payloads)

    def _datagram(self, data: bytes, local_port: int | None = None, remote: Address | None = None) -> Datagram:
        if self.use_natt:
            return Datagram(NON_ESP_MARKER + data, self.config.local_natt_port,
                            remote or (self.remote[0], self.config.remote_natt_port))
        return Datagram(data, local_port or self.config.local_port, remote or self.remote)

    def _decode(self, data: bytes) -> Message:
        msg = Message.parse(data)
        if msg.exchange != ExchangeType.IKE_SA_INIT:
            sk = msg.payloads[-1] if msg.payloads else None
            if not isinstance(sk, SKPayload) or self._cipher_in is None:
                raise ParseError("protected exchange without an SK payload")
            msg.payloads = msg.payloads[:-1] + self._cipher_in.unprotect(data, sk)
        return msg

    # -- requests we send ----------------------------------------------------------------

    def _start_next(self, now: float) -> None:
        if self._outstanding is not None or not self._tasks or self.state == State.DEAD:
            return
        task = self._tasks.popleft()
        try:
            payloads = task.build_request(self)
        except IkeError as exc:
            self._fail(exc.notify, str(exc))
            return
        self._send_request(task, task.exchange, payloads, now)

    def _send_request(self, task: object, exchange: int, payloads: list[Payload], now: float,
                      message_id: int | None = None) -> None:
        mid = self._next_mid if message_id is None else message_id
        data = self._encode(exchange, mid, False, payloads)
        if exchange == ExchangeType.IKE_SA_INIT:
            self.init_request = data
        dgram = self._datagram(data)
        self._outstanding = _Outstanding(mid, exchange, dgram, task, now + self.config.retransmit_timeout)
        self._out.append(dgram)

    def retry_request(self, task: object, payloads: list[Payload], now: float) -> None:
        """Resend a task's request with new payloads under the same Message ID (COOKIE, INVALID_KE)."""
        o = self._outstanding
        assert o is not None
        self._outstanding = None
        self._send_request(task, o.exchange, payloads, now, message_id=o.message_id)

    def _on_response(self, data: bytes, mid: int, exchange: int, remote: Address, now: float) -> None:
        o = self._outstanding
        if o is None or mid != o.message_id or exchange != o.exchange:
            self.stats["unexpected_response"] += 1
            return
        try:
            msg = self._decode(data)
        except CryptoError:
            self.stats["integrity_failed"] += 1
            return
        except ParseError:
            self.stats["malformed"] += 1
            return
        if msg.from_initiator == self.initiator:
            self.stats["malformed"] += 1
            return
        # an IKE_SA_INIT response names the responder's SPI (the task adopts it on success)
        if msg.spi_i != self.spi_i or (exchange != ExchangeType.IKE_SA_INIT and msg.spi_r != self.spi_r):
            self.stats["wrong_spi"] += 1
            return
        if exchange == ExchangeType.IKE_SA_INIT:
            self.init_response = data
        task = o.task
        try:
            retry = task.process_response(self, msg, now)
        except IkeError as exc:
            self._outstanding = None
            self._fail(exc.notify, str(exc))
            return
        if retry:                       # the task resent its request itself
            return
        self._outstanding = None
        self._next_mid += 1
        self._start_next(now)

    # -- requests we answer ----------------------------------------------------------------

    def _on_request(self, data: bytes, mid: int, exchange: int, local_port: int, remote: Address,
                    now: float) -> None:
        from control.ike.tasks.ike_auth import IkeAuthResponder
        from control.ike.tasks.ike_init import IkeInitResponder

        if self._last_response is not None and mid == self._last_response[0]:
            if data == self._last_response[1]:
                self.stats["retransmitted_requests"] += 1
                self._out.extend(self._last_response[2])
            else:
                self.stats["unexpected_request"] += 1
            return
        if mid != self._peer_mid:
            self.stats["invalid_message_id"] += 1
            return
        try:
            msg = self._decode(data)
        except CryptoError:
            self.stats["integrity_failed"] += 1
            return
        except ParseError:
            self.stats["malformed"] += 1
            return
        if msg.from_initiator == self.initiator:
            self.stats["malformed"] += 1
            return
        if exchange == ExchangeType.IKE_SA_INIT:
            spi_ok = msg.spi_r == bytes(8) and self.spi_i in (b"", msg.spi_i)
        else:
            spi_ok = msg.spi_i == self.spi_i and msg.spi_r == self.spi_r
        if not spi_ok:
            self.stats["wrong_spi"] += 1
            return
        if exchange == ExchangeType.IKE_SA_INIT and not self.initiator and self.state == State.CREATED:
            task: object = IkeInitResponder()
            self.spi_i = msg.spi_i
            self.init_request = data
            self.state = State.CONNECTING
        elif exchange == ExchangeType.IKE_AUTH and not self.initiator and self.keys is not None \
                and self.state == State.CONNECTING:
            task = IkeAuthResponder()
        else:
            # CREATE_CHILD_SA and INFORMATIONAL come with the next slice
            self.stats["unsupported_exchange"] += 1
            return
        # the reply goes back where the request came from, from the port it reached (RFC 7296 §2.23:
        # a verified request from a new address/port, e.g. after floating to NAT-T, moves the SA there)
        self.remote = remote
        self.local_port = local_port
        fatal: IkeError | None = None
        try:
            payloads = task.process_request(self, msg, now)
        except IkeError as exc:
            fatal = exc
            payloads = [NotifyPayload(exc.notify, exc.data)]
        if fatal is not None and exchange == ExchangeType.IKE_SA_INIT:
            # refusals of IKE_SA_INIT keep no state: zero responder SPI, sent in the clear
            resp = Message(msg.spi_i, bytes(8), exchange, self._flags(True), mid, payloads).serialize()
        else:
            resp = self._encode(exchange, mid, True, payloads)
        if exchange == ExchangeType.IKE_SA_INIT and fatal is None:
            self.init_response = resp
        natt = local_port == self.config.local_natt_port and local_port != self.config.local_port
        dgram = Datagram((NON_ESP_MARKER if natt else b"") + resp, local_port, remote)
        self._out.append(dgram)
        self._last_response = (mid, data, [dgram])
        self._peer_mid += 1
        if fatal is not None:
            # INVALID_KE_PAYLOAD is no failure: the initiator retries on a fresh responder SA
            self._fail(fatal.notify, str(fatal), quiet=fatal.notify == Notify.INVALID_KE_PAYLOAD)

    def _fail(self, notify: int, reason: str, quiet: bool = False) -> None:
        if self.state == State.DEAD:
            return
        self.state = State.DEAD
        self._outstanding = None
        self._tasks.clear()
        if not quiet:
            self.emit(IkeSaFailed(notify, reason))


__all__ = ["IkeSA", "Datagram", "IkeSaEstablished", "ChildSaEstablished", "ChildSaFailed", "IkeSaFailed", "IkeError",
           "State", "strip_natt", "NON_ESP_MARKER", "Notify", "PayloadType"]
