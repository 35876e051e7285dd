"""One ISAKMP SA, sans-IO: cookies, phase 1 and quick mode state, protection, retransmits, informational.

An ``Ikev1SA`` is fed ``receive_datagram(data, remote, now, local_port=...)`` and ``handle_timer(now)``;
it never touches a socket or a clock.  What it wants sent comes out of ``datagrams_to_send()`` (the
non-ESP marker already added on the NAT-T port) and what happened out of ``events()``.  Initiators call
``initiate(now)`` (phase 1, then a quick mode for the configured child), responders are created with
``initiator=False`` and fed the first message.  A message that does not fit (malformed, unexpected,
failing its HASH) is dropped and counted in ``stats`` under its reason; it changes nothing else.

Phase 1 (main and aggressive mode) is in control.ikev1.phase1, quick mode in control.ikev1.quick.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections import Counter

from control.ike.constants import NON_ESP_MARKER
from control.ike.crypto import CryptoError, KeyExchange
from control.ike.events import ChildSaDeleted, ChildSaEstablished, Datagram
from control.ikev1.codec import (
    AnyPayload,
    DecodeError,
    DeletePayload,
    Header,
    NotifyPayload,
    Payload,
    Refused,
    decode_header,
    decode_payloads,
    encode_payloads,
)
from control.ikev1.config import Ikev1Config
from control.ikev1.constants import HEADER_LEN, Exchange, Flag, NotifyType, PayloadType, Protocol
from control.ikev1.events import Address, DpdAck, IsakmpSaDeleted, IsakmpSaFailed
from control.ikev1.keys import BLOCK, P1Suite, Phase1Keys, decrypt, encrypt, exchange_iv
from control.ikev1.phase1 import Phase1
from control.ikev1.quick import QuickMode, QuickState


class Ikev1SA(Phase1, QuickMode):
    def __init__(self, config: Ikev1Config, *, initiator: bool, local: Address, remote: Address):
        self.config = config
        self.initiator = initiator
        self.local: Address = local
        self.remote: Address = remote
        self.local_ip = ipaddress.ip_address(local[0])
        self.cookie_i = os.urandom(8) if initiator else b""
        self.cookie_r = bytes(8) if initiator else os.urandom(8)
        self.state = "created"          # created, connecting, established, dead
        self.p1_step = 0                # which phase 1 message we wait for next
        self.suite: P1Suite | None = None
        self.keys: Phase1Keys | None = None
        self.ke: KeyExchange | None = None
        self.g_xi = self.g_xr = self.g_xy = b""
        self.nonce_i = self.nonce_r = b""
        self.sa_i_b = b""               # the initiator's SA payload body, signed by HASH_I/HASH_R
        self.peer_natt = False          # the peer announced RFC 3947 NAT-T
        self.nat_local = self.nat_remote = False
        self.use_natt = False           # floated to the NAT-T port
        self.remote_identity = None
        self.p1_iv = b""                # CBC state of phase 1 (the next message's IV)
        self.last_p1_block = b""        # the last phase 1 CBC block, root of every later exchange's IV
        self.quick: dict[int, QuickState] = {}      # quick modes under way, by message ID
        self._quick_done: set[int] = set()          # message IDs of finished ones: a replay is dropped
        self.children: list[ChildSaEstablished] = []
        self.stats: Counter[str] = Counter()
        self._out: list[Datagram] = []
        self._events: list[object] = []
        self._last_in = b""             # the last message we accepted and what we answered it with:
        self._last_reply: list[bytes] = []    # a peer's retransmit of it gets the same answer again
        self._retx: tuple[bytes, float, int, str] | None = None   # (message, due, tries, what it is)
        # what must follow this message's answer on the wire (the first quick mode, a rekey's Delete)
        self._after: list = []
        self._half_open_until: float | None = None
        self._dpd_seq = int.from_bytes(os.urandom(2), "big")

    # -- the caller's side ---------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[object]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        times = [t for t in (self._retx[1] if self._retx is not None else None, self._half_open_until)
                 if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._half_open_until is not None and now >= self._half_open_until and not self.established \
                and self.state != "dead":
            self._fail(f"phase 1 not completed within {self.config.half_open_timeout:g} s")
            return
        if self._retx is None or now < self._retx[1]:
            return
        data, _, tries, what = self._retx
        if tries >= self.config.retransmit_tries:
            self._retx = None
            if what.startswith("quick:"):
                mid = int(what[6:])
                self.quick.pop(mid, None)
                self._quick_failed("no answer to quick mode after retransmits")
            else:
                self._fail(f"no answer to {what} after {tries} retransmits")
            return
        self.stats["retransmits"] += 1
        self._send(data)
        cfg = self.config
        self._retx = (data, now + cfg.retransmit_timeout * cfg.retransmit_base ** (tries + 1), tries + 1, what)

    @property
    def established(self) -> bool:
        return self.state == "established"

    def receive_datagram(self, data: bytes, remote: Address, now: float, local_port: int | None = None) -> None:
        if local_port is not None and local_port == self.config.local_natt_port:
            if data[:4] != NON_ESP_MARKER:
                self._drop("not an ISAKMP message on the NAT-T port (no non-ESP marker)")
                return
            data = data[4:]
        if self.state == "dead":
            self._drop("ISAKMP SA is gone")
            return
        try:
            hdr = decode_header(data)
            if self.cookie_i and hdr.cookie_i != self.cookie_i:
                raise Refused("initiator cookie is not this SA's")
            if self.cookie_r != bytes(8) and hdr.cookie_r not in (self.cookie_r, bytes(8)) or \
                    (self.established and hdr.cookie_r != self.cookie_r):
                raise Refused("responder cookie is not this SA's")
            if data == self._last_in and self._last_reply:
                self.stats["peer_retransmits"] += 1
                for msg in self._last_reply:
                    self._send(msg)
                return
            if hdr.exchange in (Exchange.MAIN, Exchange.AGGRESSIVE):
                replies = self._phase1(hdr, data, remote, now)
            elif hdr.exchange == Exchange.QUICK:
                replies = self._quick(hdr, data, now)
            elif hdr.exchange == Exchange.INFORMATIONAL:
                replies = self._informational(hdr, data)
            else:
                raise DecodeError(f"exchange type {hdr.exchange} is not supported")
        except (DecodeError, CryptoError, Refused) as exc:
            self._drop(str(exc))
            return
        if local_port is not None and local_port == self.config.local_natt_port and self.state != "created":
            self.use_natt = True            # the peer floated (RFC 3947 §4): answer where it sent from
            self.remote = remote
        if self.state == "connecting" and self._half_open_until is None:
            # a responder keeps a half-open phase 1 only so long (the initiator's retransmits end its own)
            self._half_open_until = now + self.config.half_open_timeout
        if replies is not None:
            self._last_in, self._last_reply = data, replies
            for msg in replies:
                self._send(msg)
        while self._after:
            self._after.pop(0)(now)

    def delete(self, reason: str = "deleted by us") -> None:
        """Delete every quick mode SA and then the ISAKMP SA (informational exchanges, RFC 2408 §3.15)."""
        if not self.established:
            self._die(reason)
            return
        for child in list(self.children):
            self.delete_child(child.inbound.spi, reason)
        self._send(self._info([DeletePayload(Protocol.ISAKMP, [self.cookie_i + self.cookie_r])]))
        self._die(reason)

    def delete_child(self, spi_in: int, reason: str = "deleted by us") -> None:
        child = next((c for c in self.children if c.inbound.spi == spi_in), None)
        if child is None or not self.established:
            return
        self._send(self._info([DeletePayload(Protocol.ESP, [spi_in.to_bytes(4, "big")])]))
        self.children.remove(child)
        self._events.append(ChildSaDeleted(child.name, child.inbound.spi, child.outbound.spi, reason))

    def dpd(self) -> int:
        """Send an R-U-THERE (RFC 3706); the answer comes out as ``DpdAck``.  Returns the sequence number."""
        self._dpd_seq = (self._dpd_seq + 1) & 0xFFFFFFFF
        self._send(self._info([NotifyPayload(NotifyType.R_U_THERE, Protocol.ISAKMP, self.cookie_i + self.cookie_r,
                                             self._dpd_seq.to_bytes(4, "big"))]))
        return self._dpd_seq

    # -- sending, protection ---------------------------------------------------------------------------

    def _send(self, msg: bytes) -> None:
        if self.use_natt:
            self._out.append(Datagram(NON_ESP_MARKER + msg, self.config.local_natt_port, self.remote))
        else:
            self._out.append(Datagram(msg, self.config.local_port, self.remote))

    def _arm(self, msg: bytes, now: float, what: str) -> None:
        self._retx = (msg, now + self.config.retransmit_timeout, 0, what)

    def _seal(self, exchange: int, mid: int, payloads: list[AnyPayload], iv: bytes) -> tuple[bytes, bytes]:
        """The encrypted message and the CBC state after it (its last ciphertext block)."""
        assert self.keys is not None
        first, plain = encode_payloads(payloads)
        ct = encrypt(self.keys.enc_key, iv, plain)
        hdr = Header(self.cookie_i, self.cookie_r, first, exchange, Flag.ENCRYPTION, mid, HEADER_LEN + len(ct))
        return hdr.pack() + ct, ct[-BLOCK:]

    def _open(self, hdr: Header, data: bytes, iv: bytes) -> tuple[list[AnyPayload], bytes]:
        """The payloads of an encrypted message and the CBC state after it; nothing is kept here."""
        if not hdr.encrypted:
            raise Refused("a message that must be encrypted came in the clear")
        if self.keys is None:
            raise Refused("encrypted message before the keys exist")
        ct = data[HEADER_LEN:]
        plain = decrypt(self.keys.enc_key, iv, ct)
        return decode_payloads(hdr.next_payload, plain, padded=True), ct[-BLOCK:]

    def _hash_payload(self, key_data: bytes) -> Payload:
        assert self.suite is not None and self.keys is not None
        return Payload(PayloadType.HASH, self.suite.prf(self.keys.skeyid_a, key_data))

    def _check_hash(self, got: AnyPayload | None, key_data: bytes, what: str) -> None:
        assert self.suite is not None and self.keys is not None
        if not isinstance(got, Payload) or got.type != PayloadType.HASH:
            raise Refused(f"{what}: no HASH payload first")
        if not hmac.compare_digest(got.data, self.suite.prf(self.keys.skeyid_a, key_data)):
            raise Refused(f"{what}: HASH does not verify")

    # -- informational ---------------------------------------------------------------------------------

    def _info(self, payloads: list[AnyPayload]) -> bytes:
        """An informational message: HASH(1) = prf(SKEYID_a, M-ID | payloads), its own IV from the M-ID."""
        assert self.suite is not None
        mid = int.from_bytes(os.urandom(4), "big") | 1
        _, body = encode_payloads(payloads)
        msg, _ = self._seal(Exchange.INFORMATIONAL, mid, [self._hash_payload(mid.to_bytes(4, "big") + body),
                                                          *payloads],
                            exchange_iv(self.suite, self.last_p1_block, mid))
        return msg

    def _informational(self, hdr: Header, data: bytes) -> list[bytes] | None:
        if not self.established:
            if hdr.encrypted:
                raise Refused("encrypted informational before phase 1 completed")
            # unauthenticated: counted and shown, never acted on (anyone can send one)
            for p in decode_payloads(hdr.next_payload, data[HEADER_LEN:]):
                if isinstance(p, NotifyPayload):
                    self.stats[f"unauthenticated_notify_{p.notify_type}"] += 1
            return None
        assert self.suite is not None
        if hdr.message_id == 0:
            raise Refused("informational with message ID 0 after phase 1")
        payloads, _ = self._open(hdr, data, exchange_iv(self.suite, self.last_p1_block, hdr.message_id))
        self._check_hash(payloads[0] if payloads else None,
                         hdr.message_id.to_bytes(4, "big") + b"".join(p.raw for p in payloads[1:]), "informational")
        replies: list[bytes] = []
        for p in payloads[1:]:
            if isinstance(p, DeletePayload):
                self._peer_delete(p)
            elif isinstance(p, NotifyPayload):
                if p.notify_type == NotifyType.R_U_THERE:
                    self.stats["dpd_answered"] += 1
                    replies.append(self._info([NotifyPayload(NotifyType.R_U_THERE_ACK, Protocol.ISAKMP,
                                                             self.cookie_i + self.cookie_r, p.data)]))
                elif p.notify_type == NotifyType.R_U_THERE_ACK and len(p.data) == 4:
                    self._events.append(DpdAck(int.from_bytes(p.data, "big")))
                else:
                    self.stats[f"notify_{p.notify_type}"] += 1
        for r in replies:
            self._send(r)
        return None

    def _peer_delete(self, p: DeletePayload) -> None:
        if p.protocol == Protocol.ISAKMP:
            if self.cookie_i + self.cookie_r in p.spis:
                for child in list(self.children):
                    self._events.append(ChildSaDeleted(child.name, child.inbound.spi, child.outbound.spi,
                                                       "ISAKMP SA deleted by the peer"))
                self.children.clear()
                self._die("deleted by the peer")
            return
        for spi in p.spis:
            # the peer names the SA it receives on: our outbound one
            child = next((c for c in self.children if c.outbound.spi.to_bytes(4, "big") == spi), None)
            if child is not None:
                self.children.remove(child)
                self._events.append(ChildSaDeleted(child.name, child.inbound.spi, child.outbound.spi,
                                                   "deleted by the peer"))

    # -- ends --------------------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.stats["dropped"] += 1
        self.stats[f"dropped: {reason}"] += 1

    def _fail(self, reason: str) -> None:
        self.state = "dead"
        self._retx = None
        self._events.append(IsakmpSaFailed(reason))

    def _die(self, reason: str) -> None:
        self.state = "dead"
        self._retx = None
        self._events.append(IsakmpSaDeleted(self.cookie_i, self.cookie_r, reason))
