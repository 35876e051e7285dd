"""The IKE SA, sans-IO: what one IKE SA is (SPIs, keys, peer, CHILD SAs, lifetimes) and its timers.

An ``IkeSA`` is fed ``receive_datagram(data, local_port, remote, now)`` and
``handle_timer(now)``; it never touches a socket or a clock.  What it wants
sent comes out of ``datagrams_to_send()`` (UDP payloads, the non-ESP marker
already added when NAT-T is in use) and what happened out of ``next_event()``.

Exchanges are tasks (``control.ike.tasks``), run by the IKE SA's task manager
(``control.ike.task_manager``: ordering, Message IDs, windows, retransmits, the
response cache).  The IKE SA keeps SK protection and fragments (its keys), and
the timers of its lifetime (liveness checks, rekeying, reauthentication,
half-open expiry, NAT-T keepalives).

Our own exchanges are queued with ``create_child``, ``rekey_child``,
``rekey_ike``, ``delete_child``, ``delete`` and ``dpd``.  An IKE SA rekey
yields a *new* ``IkeSA`` object (``IkeSaRekeyed.new_sa``) that the caller must
route the new SPIs to.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections import Counter, deque

from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.constants import NATT_KEEPALIVE, NON_ESP_MARKER, ExchangeType, Flag, Notify
from control.ike.cp import IPAddress
from control.ike.crypto import IkeKeys, IkeSuite, KeyExchange, SKCipher
from control.ike.events import (
    Address,
    ChildSaDeleted,
    ChildState,
    ChildStatus,
    Datagram,
    IkeSaDeleted,
    IkeSaFailed,
    State,
)
from control.ike.fragment import Reassembler, fragment_chain, message_limit
from control.ike.intermediate import IntAuth, intauth_head
from control.ike.message import HEADER_LEN, Header, Message, parse_header
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import NotifyPayload, ParseError, Payload, SKFPayload, SKPayload
from control.ike.spi import random_spi
from control.ike.task_manager import TaskManager
from control.ike.tasks.base import Initiator
from control.ike.tasks.child_create import ChildCreateInitiator
from control.ike.tasks.child_delete import ChildDeleteInitiator
from control.ike.tasks.child_rekey import ChildRekeyInitiator
from control.ike.tasks.ike_auth import IkeAuthInitiator
from control.ike.tasks.ike_delete import IkeDeleteInitiator
from control.ike.tasks.ike_dpd import DpdInitiator
from control.ike.tasks.ike_init import IkeInitInitiator
from control.ike.tasks.ike_reauth import (
    finish_reauth,
    lifetimes_due,
    reauth_abandoned,
    schedule_lifetimes,
    start_reauth,
)
from control.ike.tasks.ike_rekey import IkeRekeyInitiator


def strip_natt(data: bytes, natt: bool) -> bytes | None:
    """The IKE message in a UDP payload; on the NAT-T port None for keepalives and ESP."""
    if not natt:
        return data
    if len(data) >= 4 and data[:4] == NON_ESP_MARKER:
        return data[4:]
    return None


# module globals for the hot paths: attribute access on an enum class goes through EnumType's
# __getattr__ hook, about ten times the cost of a global
_C_INSTALLED = ChildStatus.INSTALLED
_S_CONNECTING = State.CONNECTING
_S_DEAD = State.DEAD
_S_ESTABLISHED = State.ESTABLISHED
_S_REKEYED = State.REKEYED
_X_IKE_SA_INIT = int(ExchangeType.IKE_SA_INIT)
_X_IKE_INTERMEDIATE = int(ExchangeType.IKE_INTERMEDIATE)
# plain ints: IntFlag arithmetic runs in Python and showed in a busy responder's profile
_RESPONSE, _INITIATOR = int(Flag.RESPONSE), int(Flag.INITIATOR)


@functools.lru_cache(maxsize=4096)
def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address``, memoised: every IKE SA parses its local and peer address."""
    return ipaddress.ip_address(text)


class IkeSA:
    """One IKE SA, initiator or responder.  Create initiators with ``initiate``, responders with
    ``IkeSA(config, initiator=False, ...)`` then feed them the IKE_SA_INIT request."""

    def __init__(self, config: IkeConfig, *, initiator: bool, local: Address, remote: Address):
        self.config = config
        self.initiator = initiator
        self.local_ip = ip_address(local[0])
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
        # RFC 9370: the additional key exchanges still to run in IKE_INTERMEDIATE (their methods, in
        # order), how many ran, and RFC 9242's IntAuth over those messages (None: none negotiated)
        self.addke_todo: list[int] = []
        self.addke_done = 0
        self.int_auth: IntAuth | None = None
        self.nat_local = False
        self.nat_remote = False
        self.remote_identity: Identity | None = None
        self.vips: list[IPAddress] = []     # leased to the peer (responder) or given us (initiator), §3.15
        self.dns: list[IPAddress] = []      # DNS servers a CFG_REPLY gave us (initiator)
        self.children: list[ChildState] = []
        self.cipher_out: SKCipher | None = None     # SK protection of what we send, set with the keys
        self.cipher_in: SKCipher | None = None
        self.peer_window = 1            # the peer's SET_WINDOW_SIZE (RFC 7296 §2.3)
        # our exchanges and the peer's requests: ordering, Message IDs, retransmits, the response cache
        self.task_manager = TaskManager(config.window_size)
        # outbound ESP SPIs the peer deleted before the response that tells us them arrived (its Delete
        # overtook our lost/late CREATE_CHILD_SA response): such a CHILD SA is removed as soon as it lands
        self.early_deletes: set[int] = set()
        self._out: list[Datagram] = []
        self._events: deque = deque()
        self.stats: Counter[str] = Counter()
        # timers (absolute times on the caller's clock)
        self.created_at: float | None = None
        self.established_at: float | None = None
        self.last_heard: float | None = None    # last authenticated message from the peer
        self.rekey_at: float | None = None
        # a peer's IKE rekey that crossed ours: (Ni, Nr, the new IkeSA)
        self.ike_collision: tuple[bytes, bytes, IkeSA] | None = None
        self.redundant = False          # the losing duplicate of a simultaneous IKE rekey
        self.replaced_by: IkeSA | None = None
        # RFC 7383: the peer announced IKEV2_FRAGMENTATION_SUPPORTED (set by ike_init); reassembly state
        self.peer_fragmentation = False
        # RFC 7427: the hashes the peer's SIGNATURE_HASH_ALGORITHMS named (set by ike_init); None: our defaults
        self.peer_sig_hashes: set[int] | None = None
        self._reasm: Reassembler | None = None
        self.frag_first: bytes | None = None   # fragment 1 of the request just reassembled
        # lifetimes (control.ike.tasks.ike_reauth): reauthentication and the hard expiry
        self.reauth_at: float | None = None
        self.expire_at: float | None = None
        self.reauth_by: IkeSA | None = None     # the new IKE SA of a reauthentication under way
        self.reauth_of: IkeSA | None = None     # on that new SA: the IKE SA it replaces
        # NAT-T keepalives (RFC 3948 §2.3): the last time anything left for the peer
        self.last_sent: float | None = None
        self.now_seen = 0.0

    @classmethod
    def from_rekey(cls, old: IkeSA, *, initiator: bool, spi_i: bytes, spi_r: bytes, suite: IkeSuite,
                   keys: IkeKeys, nonce_i: bytes, nonce_r: bytes, now: float) -> IkeSA:
        """The IKE SA that replaces ``old`` (RFC 7296 §2.18): the rekey's initiator is its initiator."""
        port, remote = old.endpoint
        new = cls(old.config, initiator=initiator, local=(str(old.local_ip), port), remote=remote)
        new.spi_i, new.spi_r = spi_i, spi_r
        new.suite = suite
        new.nonce_i, new.nonce_r = nonce_i, nonce_r
        new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
        new.remote_identity = old.remote_identity
        new.peer_fragmentation = old.peer_fragmentation     # negotiated once for the IKE SA's lifetime
        new.state = State.ESTABLISHED
        new.created_at = new.established_at = new.last_heard = new.last_sent = now
        new._schedule_ike_rekey(now)
        if old.config.reauth_time > 0 and old.expire_at is not None:
            # a rekey keeps the keys fresh but not the authentication: the reauth deadline carries over
            new.reauth_at, new.expire_at = old.reauth_at, old.expire_at
        new.set_keys(keys)
        return new

    # -- public sans-IO interface ----------------------------------------------------

    def initiate(self, now: float, children: list[ChildConfig] | None = None) -> None:
        """Queue IKE_SA_INIT and IKE_AUTH (with the first CHILD SA) and send the first request."""

        if not self.initiator or self.state != State.CREATED:
            raise RuntimeError("initiate() is for a fresh initiator SA")
        self.state = State.CONNECTING
        self.created_at = now
        kids = list(self.config.children if children is None else children)
        tm = self.task_manager
        tm.adopt([IkeInitInitiator(), IkeAuthInitiator(kids[0] if kids else None)])
        for extra in kids[1:]:
            self.create_child(now, extra, start=False)
        tm.start_next(self, now)

    def create_child(self, now: float, child: ChildConfig, *, start: bool = True) -> None:
        """Queue a CREATE_CHILD_SA exchange for a new CHILD SA."""
        self.queue(ChildCreateInitiator(child), now, start=start)

    def rekey_child(self, now: float, spi_in: int) -> None:
        """Queue a rekey of the CHILD SA whose inbound SPI is ``spi_in`` (e.g. on SOFT_EXPIRE)."""
        self.queue(ChildRekeyInitiator(spi_in), now)

    def delete_child(self, now: float, spi_in: int) -> None:
        """Queue an INFORMATIONAL Delete of the CHILD SA whose inbound SPI is ``spi_in``."""
        self.queue(ChildDeleteInitiator([spi_in]), now)

    def rekey_ike(self, now: float) -> None:
        """Queue a rekey of this IKE SA (CREATE_CHILD_SA with new SPIs and keys)."""
        self.queue(IkeRekeyInitiator(), now)

    def delete(self, now: float) -> None:
        """Queue an INFORMATIONAL Delete of this IKE SA (and with it every CHILD SA)."""
        if self.state in (State.CREATED, State.CONNECTING):
            self.fail(0, "deleted before it was established")
            return
        self.queue(IkeDeleteInitiator(), now)

    def dpd(self, now: float) -> None:
        """Queue a liveness check (an empty INFORMATIONAL request)."""
        self.queue(DpdInitiator(), now)

    def find_child(self, *, spi_in: int | None = None, spi_out: int | None = None) -> ChildState | None:
        for c in self.children:
            if (spi_in is not None and c.spi_in == spi_in) or (spi_out is not None and c.spi_out == spi_out):
                return c
        return None

    def receive_datagram(self, data: bytes, local_port: int, remote: Address, now: float) -> None:
        if self.state == _S_DEAD:
            return
        self.now_seen = now
        natt = local_port == self.config.local_natt_port and local_port != self.config.local_port
        msg_bytes = strip_natt(data, natt)
        if msg_bytes is None:
            self.stats["keepalives_received" if data == NATT_KEEPALIVE else "not_ike"] += 1
            return
        try:
            hdr = parse_header(msg_bytes)
        except ParseError as exc:
            if exc.notify == Notify.INVALID_MAJOR_VERSION:
                self.stats["invalid_major_version"] += 1
                reply = version_reply(msg_bytes)
                if reply is not None:
                    self._out.append(Datagram((NON_ESP_MARKER if natt else b"") + reply, local_port, remote))
            else:
                self.stats["malformed"] += 1
            return
        if hdr.flags & _RESPONSE:
            self.task_manager.on_response(self, msg_bytes, hdr.message_id, hdr.exchange, now, hdr)
        else:
            self.task_manager.on_request(self, msg_bytes, hdr.message_id, hdr.exchange, local_port, remote, now, hdr)
        self._after(now)

    def handle_timer(self, now: float) -> None:
        if self.state == State.DEAD:
            return
        self.now_seen = now
        if self.state == State.CONNECTING and not self.initiator and self.created_at is not None \
                and now >= self.created_at + self.config.half_open_timeout:
            self.stats["half_open_timeout"] += 1
            self.fail(0, "half-open IKE SA timed out", quiet=True)
            return
        if not self.task_manager.retransmit(self, now):
            return
        if self._reasm is not None:
            self._reasm.expire(now)
        self._due(now)

    def get_timer(self) -> float | None:
        if self.state == _S_DEAD:
            return None
        times = self.task_manager.timers()
        if self._reasm is not None and self._reasm.deadline is not None:
            times.append(self._reasm.deadline)
        if self.state == _S_CONNECTING and not self.initiator and self.created_at is not None:
            times.append(self.created_at + self.config.half_open_timeout)
        if self.state == _S_ESTABLISHED:
            if self.config.dpd_delay > 0 and self.last_heard is not None \
                    and self.task_manager.outstanding is None:
                times.append(self.last_heard + self.config.dpd_delay)
            if self.rekey_at is not None and self.reauth_by is None:
                times.append(self.rekey_at)
            if self.reauth_at is not None and self.reauth_by is None:
                times.append(self.reauth_at)
            if self.keepalive_due is not None:
                times.append(self.keepalive_due)
            times += [c.rekey_at for c in self.children
                      if c.rekey_at is not None and c.status == _C_INSTALLED and self.reauth_by is None]
            if self.expire_at is not None:
                times.append(self.expire_at)
        return min(times) if times else None

    @property
    def keepalive_due(self) -> float | None:
        """When the next NAT-T keepalive is due: only behind a NAT, after keep_alive seconds of silence."""
        if not self.nat_local or self.config.keep_alive <= 0 or self.state != State.ESTABLISHED \
                or self.last_sent is None:
            return None
        return self.last_sent + self.config.keep_alive

    def reauth(self, now: float) -> None:
        """Reauthenticate (RFC 7296 §2.8.3): a new IKE SA replaces this one and its CHILD SAs, make before
        break (``IkeSaReauthStarted``)."""
        start_reauth(self, now)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else None

    @property
    def remote_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The peer's address as an address object (memoised: a busy responder parses many)."""
        return ip_address(self.remote[0])

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
        if self.initiator and self.local_port == self.config.local_port:
            return self.config.local_natt_port, self.config.remote_natt_port
        return self.local_port, self.remote[1]

    @property
    def endpoint(self) -> tuple[int, Address]:
        """(our port, the peer's address) that requests from us go between."""
        if self.use_natt and self.initiator and self.local_port == self.config.local_port:
            return self.config.local_natt_port, (self.remote[0], self.config.remote_natt_port)
        return self.local_port, self.remote

    def emit(self, event: object) -> None:
        self._events.append(event)

    def set_keys(self, keys: IkeKeys) -> None:
        assert self.suite is not None
        self.keys = keys
        mine = (keys.sk_ei, keys.sk_ai) if self.initiator else (keys.sk_er, keys.sk_ar)
        theirs = (keys.sk_er, keys.sk_ar) if self.initiator else (keys.sk_ei, keys.sk_ai)
        self.cipher_out = SKCipher(self.suite, *mine)
        self.cipher_in = SKCipher(self.suite, *theirs)

    # the task manager's, for the tasks: they ask the IKE SA they run on
    def queue(self, task: Initiator, now: float, *, start: bool = True) -> None:
        """Queue one of our exchanges; with ``start``, send it at once if the window allows."""
        self.task_manager.add(self, task, now, start)

    def start_queued(self, now: float) -> None:
        """Send what is queued, as far as the peer's window lets it go."""
        self.task_manager.start_next(self, now)

    def queue_front(self, task: Initiator) -> None:
        """Run ``task`` before anything else queued (a follow-up such as the Delete after a rekey)."""
        self.task_manager.add_front(task)

    def queued(self, kind: type) -> list:
        """Queued and outstanding tasks of one class."""
        return self.task_manager.queued(kind)

    @property
    def outstanding_task(self) -> Initiator | None:
        return self.task_manager.outstanding_task

    def take_tasks(self) -> list[Initiator]:
        """Hand queued tasks to the IKE SA that replaces this one."""
        return self.task_manager.take()

    def adopt_tasks(self, tasks: list[Initiator]) -> None:
        self.task_manager.adopt(tasks)

    def retry_request(self, task: Initiator, payloads: list[Payload], now: float) -> None:
        """Resend a task's request with new payloads under the same Message ID (COOKIE, INVALID_KE)."""
        self.task_manager.retry_request(self, task, payloads, now)

    def send(self, dgrams: list[Datagram]) -> None:
        """Queue datagrams for ``datagrams_to_send``."""
        self._out.extend(dgrams)

    def remove_child(self, child: ChildState, reason: str) -> None:
        if child in self.children:
            self.children.remove(child)
            self.emit(ChildSaDeleted(child.config.name, child.spi_in, child.spi_out, reason))

    def schedule_child(self, child: ChildState, now: float) -> None:
        if child.scheduled:
            return
        child.scheduled = True
        if child.config.rekey_time > 0:
            child.rekey_at = now + child.config.rekey_time - random.uniform(0, child.config.rand_time)

    def _schedule_ike_rekey(self, now: float) -> None:
        if self.config.rekey_time > 0:
            self.rekey_at = now + self.config.rekey_time - random.uniform(0, self.config.rand_time)
        schedule_lifetimes(self, now)

    def dead(self, reason: str, *, rekeyed: bool = False) -> None:
        """The IKE SA ends after a Delete: its CHILD SAs go with it."""
        if self._end(reason):
            self.emit(IkeSaDeleted(self.spi_i, self.spi_r, reason, rekeyed or self.redundant))

    def _end(self, reason: str) -> bool:
        """Remove the CHILD SAs and drop all work: False if the IKE SA had already ended."""
        if self.state == State.DEAD:
            return False
        if self.reauth_of is not None:
            reauth_abandoned(self, reason)
        for c in list(self.children):
            self.remove_child(c, reason)
        self.state = State.DEAD
        self.task_manager.flush()
        return True

    # -- message protection: the task manager encodes and decodes with the IKE SA's keys and endpoint --

    def header_flags(self, response: bool) -> int:
        return (_INITIATOR if self.initiator else 0) | (_RESPONSE if response else 0)

    def encode(self, exchange: int, message_id: int, response: bool, payloads: list[Payload]) -> bytes:
        msg = Message(self.spi_i, self.spi_r, exchange, self.header_flags(response), message_id)
        if exchange == _X_IKE_SA_INIT:
            msg.payloads = payloads
            return msg.serialize()
        assert self.cipher_out is not None
        return self.cipher_out.protect(msg, payloads)

    def encode_frames(self, exchange: int, message_id: int, response: bool,
                       payloads: list[Payload]) -> bytes | list[bytes]:
        """``encode``, or the message's RFC 7383 fragments (a list) when fragmentation was negotiated, we
        send fragments (``yes``/``force``) and the whole message would exceed the fragment size."""
        frag = exchange != _X_IKE_SA_INIT and self.peer_fragmentation \
            and self.config.fragmentation in ("yes", "force") and self.cipher_out is not None
        if frag or (exchange == _X_IKE_INTERMEDIATE and self.cipher_out is not None):
            assert self.cipher_out is not None
            msg = Message(self.spi_i, self.spi_r, exchange, self.header_flags(response), message_id)
            first, plain = serialize_payloads(payloads)       # once, for the size check and the message
            if exchange == _X_IKE_INTERMEDIATE:
                self._note_intermediate(self.initiator, intauth_head(msg, first, len(plain)), plain, message_id)
            if frag:
                limit = message_limit(self.config.fragment_size, self.remote_ip.version)
                frames = fragment_chain(self.cipher_out, msg, first, plain, limit)
                if frames is not None:
                    self.stats["fragmented_messages_sent"] += 1
                    self.stats["fragments_sent"] += len(frames)
                    return frames
            return self.cipher_out.protect_chain(msg, first, plain)
        return self.encode(exchange, message_id, response, payloads)

    def _note_intermediate(self, from_initiator: bool, head: bytes, plain: bytes, mid: int) -> None:
        # RFC 9242 §3.3.2: under the keys that protect this message, i.e. the ones in force now
        if self.int_auth is not None and self.suite is not None and self.keys is not None:
            self.int_auth.add(self.suite.prf, self.keys, from_initiator, head, plain, mid)

    def datagram(self, data: bytes) -> Datagram:
        port, remote = self.endpoint
        if self.use_natt:
            return Datagram(NON_ESP_MARKER + data, port, remote)
        return Datagram(data, port, remote)

    def decode(self, data: bytes, now: float = 0.0, hdr: Header | None = None) -> Message | None:
        """Parse and unprotect.  ParseError from the unprotected part means an unauthenticated problem
        (drop); a ParseError from inside a verified SK payload carries ``authenticated = True``.
        None: an RFC 7383 fragment that was kept (or dropped, counted) while its message is incomplete."""
        self.frag_first = None
        msg = Message.parse(data, hdr)
        if msg.exchange != _X_IKE_SA_INIT:
            sk = msg.payloads[-1] if msg.payloads else None
            if isinstance(sk, SKFPayload) and self.cipher_in is not None:
                if self._reasm is None:
                    self._reasm = Reassembler(self.stats)
                whole = self._reasm.add(data, msg, sk, self.cipher_in, now)
                if whole is None:
                    return None
                self.frag_first = whole.first_datagram
                if msg.exchange == _X_IKE_INTERMEDIATE:     # as if it had come whole (RFC 9242 §3.3.2)
                    head = intauth_head(msg, whole.first_type, len(whole.plain))
                    self._note_intermediate(msg.from_initiator, head, whole.plain, msg.message_id)
                msg.payloads = whole.payloads()
                return msg
            if not isinstance(sk, SKPayload) or self.cipher_in is None:
                raise ParseError("protected exchange without an SK payload")
            if msg.exchange == _X_IKE_INTERMEDIATE:
                plain = self.cipher_in.unprotect_plain(data, sk)
                head = intauth_head(msg, sk.first, len(plain))
                self._note_intermediate(msg.from_initiator, head, plain, msg.message_id)
                msg.payloads = msg.payloads[:-1] + parse_payloads(sk.first, plain)
                return msg
            msg.payloads = msg.payloads[:-1] + self.cipher_in.unprotect(data, sk)
        return msg

    # -- timers -------------------------------------------------------------------------

    def _after(self, now: float) -> None:
        """Bookkeeping after every message: start timers for what was just established."""
        if self._out:
            self.last_sent = now
        new = self.replaced_by
        if self.state == _S_REKEYED and new is not None and new.state == _S_ESTABLISHED \
                and (self.children or self.task_manager.queue):
            # an exchange that was under way when this SA was replaced finished here: its CHILD SAs and
            # follow-ups belong to the new IKE SA
            new.children += self.children
            self.children = []
            tasks = self.task_manager.take()
            keep = [t for t in tasks if isinstance(t, IkeDeleteInitiator) and t.rekeyed]
            new.adopt_tasks([t for t in tasks if t not in keep and not isinstance(t, IkeRekeyInitiator)])
            self.task_manager.adopt(keep)
            new.start_queued(now)
        if self.state == _S_ESTABLISHED and self.established_at is None:
            self.established_at = now
            if self.last_heard is None:
                self.last_heard = now
            self._schedule_ike_rekey(now)
        for c in self.children:
            if not c.scheduled:
                self.schedule_child(c, now)
        if self.reauth_of is not None:
            finish_reauth(self, now)

    def _due(self, now: float) -> None:
        if self.state != State.ESTABLISHED or lifetimes_due(self, now):
            return
        self._after(now)
        if self.rekey_at is not None and now >= self.rekey_at and self.reauth_by is None:
            self.rekey_at = None
            if self.suite is not None and self.suite.addke:
                # no IKE_FOLLOWUP_KE yet: a CREATE_CHILD_SA rekey could not repeat the additional key
                # exchanges, and a peer that requires them refuses it; a make-before-break
                # reauthentication runs them all again in IKE_INTERMEDIATE
                self.reauth(now)
            else:
                self.rekey_ike(now)
        for c in list(self.children):
            if self.reauth_by is not None:
                break               # the reauthentication re-creates them
            if c.rekey_at is not None and now >= c.rekey_at and c.status == ChildStatus.INSTALLED:
                c.rekey_at = None
                self.rekey_child(now, c.spi_in)
        if self.config.dpd_delay > 0 and self.task_manager.idle \
                and self.last_heard is not None and now >= self.last_heard + self.config.dpd_delay:
            self.dpd(now)
        self.start_queued(now)

    def fail(self, notify: int, reason: str, quiet: bool = False, *, detail: tuple[str, ...] = (),
             received: bool = False) -> None:
        """The IKE SA ends on an error: its CHILD SAs go, and (unless ``quiet``) ``IkeSaFailed`` says why."""
        if self._end(reason) and not quiet:
            self.emit(IkeSaFailed(notify, reason, detail, received))


def version_reply(data: bytes) -> bytes | None:
    """RFC 7296 §2.5: a request with a higher major version gets INVALID_MAJOR_VERSION, in the clear,
    with the version we speak in the header.  Responses are never answered."""
    if len(data) < HEADER_LEN or data[19] & Flag.RESPONSE or data[17] >> 4 <= 2:
        return None
    spi_i, spi_r, exchange, mid = data[:8], data[8:16], data[18], int.from_bytes(data[20:24], "big")
    # the reply is a response from whichever side did not send the request
    flags = Flag.RESPONSE | (0 if data[19] & Flag.INITIATOR else Flag.INITIATOR)
    return Message(spi_i, spi_r, exchange, flags, mid, [NotifyPayload(Notify.INVALID_MAJOR_VERSION)]).serialize()


__all__ = ["IkeSA", "version_reply", "strip_natt"]
