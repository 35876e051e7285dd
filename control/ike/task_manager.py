"""The task manager of one IKE SA (RFC 7296 §2.1-§2.3), after strongSwan's ``task_manager_v2``.

It runs the exchanges, the IKE SA keeps what they agree on.  Ours: tasks wait in a queue until the peer's
Message ID window lets the next one go (``control.ike.window``), get the next Message ID, and are
retransmitted with exponential back-off until answered or given up.  The peer's: a request inside our
window goes to the responder task its exchange and content call for (``control.ike.tasks.dispatch``),
and the answer is kept per Message ID so a retransmitted request gets the same bytes again.

Message protection (SK payloads, RFC 7383 fragments) and the datagrams' ports belong to the IKE SA,
whose keys and endpoint they use; tasks never see Message IDs, retransmits or the response cache.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from control.ike.constants import NON_ESP_MARKER, ExchangeType, Notify, PayloadType
from control.ike.crypto import CryptoError
from control.ike.events import Address, Datagram, IkeError, State
from control.ike.message import Header, Message
from control.ike.payloads import NotifyPayload, ParseError, Payload, SKPayload
from control.ike.tasks.base import Initiator, Responder
from control.ike.tasks.dispatch import dispatch
from control.ike.tasks.ike_auth import IkeAuthResponder
from control.ike.tasks.ike_init import IkeInitResponder
from control.ike.tasks.ike_intermediate import IkeIntermediateResponder
from control.ike.window import ResponderWindow, may_send

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

# module globals for the hot paths: attribute access on an enum class goes through EnumType's
# __getattr__ hook, about ten times the cost of a global
_S_CONNECTING = State.CONNECTING
_S_CREATED = State.CREATED
_S_DEAD = State.DEAD
_S_DELETING = State.DELETING
_S_ESTABLISHED = State.ESTABLISHED
_S_REKEYED = State.REKEYED
_X_CREATE_CHILD_SA = int(ExchangeType.CREATE_CHILD_SA)
_X_IKE_AUTH = int(ExchangeType.IKE_AUTH)
_X_IKE_SA_INIT = int(ExchangeType.IKE_SA_INIT)
_X_INFORMATIONAL = int(ExchangeType.INFORMATIONAL)
_X_IKE_INTERMEDIATE = int(ExchangeType.IKE_INTERMEDIATE)


@dataclass
class Outstanding:
    """A request of ours waiting for its response."""

    message_id: int
    exchange: int
    datagram: Datagram
    task: Initiator
    next_send: float
    tries: int = 0
    more: list[Datagram] = field(default_factory=list)     # RFC 7383: the fragments after the first


class TaskManager:
    """Ordering, Message IDs, windows, retransmits and the response cache of one ``IkeSA``.

    The IKE SA is passed to each call rather than kept: a reference back would make every IKE SA a
    reference cycle, freed only by the cyclic collector instead of when the last reference goes."""

    def __init__(self, window_size: int) -> None:
        self.queue: deque[Initiator] = deque()
        self.outstanding: Outstanding | None = None     # the oldest request in flight
        self.extra: dict[int, Outstanding] = {}         # younger ones, when the peer's window is over 1
        self.next_mid = 0                               # our next request
        self.responder = ResponderWindow(window_size)   # the requests we answer

    @property
    def peer_mid(self) -> int:
        """The Message ID of the peer's next request (the lowest one not answered yet)."""
        return self.responder.next

    # -- the queue ------------------------------------------------------------------------

    def add(self, sa: IkeSA, task: Initiator, now: float, start: bool = True) -> None:
        """Queue one of our exchanges; with ``start``, send it at once if the window allows."""
        if sa.state in (_S_DEAD, _S_DELETING):
            return
        self.queue.append(task)
        if start and sa.state == _S_ESTABLISHED:
            self.start_next(sa, now)

    def add_front(self, task: Initiator) -> None:
        self.queue.appendleft(task)

    def queued(self, kind: type) -> list:
        """Queued and outstanding tasks of one class."""
        out = [t for t in self.queue if isinstance(t, kind)]
        out += [o.task for o in self.in_flight() if isinstance(o.task, kind)]
        return out

    @property
    def outstanding_task(self) -> Initiator | None:
        return self.outstanding.task if self.outstanding is not None else None

    def take(self) -> list[Initiator]:
        """Empty the queue, handing its tasks to the caller (the IKE SA that replaces this one)."""
        out = list(self.queue)
        self.queue.clear()
        return out

    def adopt(self, tasks: list[Initiator]) -> None:
        self.queue.extend(tasks)

    def flush(self) -> None:
        """Drop all work: the IKE SA ended."""
        self.outstanding = None
        self.extra.clear()
        self.queue.clear()

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing queued (when a liveness check may go)."""
        return self.outstanding is None and not self.queue

    # -- requests we send -------------------------------------------------------------------

    def in_flight(self) -> list[Outstanding]:
        """Our requests waiting for an answer, oldest first."""
        head = [self.outstanding] if self.outstanding is not None else []
        if not self.extra:              # the usual case (window 1): no sorting, no second list
            return head
        return head + [self.extra[m] for m in sorted(self.extra)]

    def _fits_window(self, sa: IkeSA) -> bool:
        """Whether the next queued task may start now: nothing in flight, or (window > 1) it and every
        exchange in flight are independent and its Message ID is inside the peer's window."""
        if self.outstanding is None:
            return True
        flight = self.in_flight()
        return self.queue[0].concurrent and sa.state == State.ESTABLISHED \
            and all(o.task.concurrent for o in flight) \
            and may_send(self.next_mid, [o.message_id for o in flight], sa.peer_window)

    def start_next(self, sa: IkeSA, now: float) -> None:
        """Send queued requests while the peer's window and the IKE SA's state let them go."""
        while self.queue and sa.state != _S_DEAD and self._fits_window(sa):
            if sa.state == _S_REKEYED and not self.queue[0].on_rekeyed_sa:
                return              # the rest waits for (and moves to) the new IKE SA
            task = self.queue.popleft()
            try:
                payloads = task.build_request(sa)
            except IkeError as exc:
                sa.fail(exc.notify, str(exc), detail=exc.detail, received=exc.received)
                return
            if payloads is None:        # the task found nothing left to do
                continue
            self._send_request(sa, task, task.exchange, payloads, now)

    def _send_request(self, sa: IkeSA, task: Initiator, exchange: int, payloads: list[Payload], now: float,
                      message_id: int | None = None) -> None:
        mid = self.next_mid if message_id is None else message_id
        if message_id is None:
            self.next_mid += 1          # Message IDs are handed out as requests leave (several may be in flight)
        data = sa.encode_frames(exchange, mid, False, payloads)
        more: list[Datagram] = []
        if isinstance(data, list):      # RFC 7383 fragments: all go out, and all again on retransmission
            more = [sa.datagram(f) for f in data[1:]]
            data = data[0]
        if exchange == _X_IKE_SA_INIT:
            sa.init_request = data
        dgram = sa.datagram(data)
        o = Outstanding(mid, exchange, dgram, task, now + sa.config.retransmit_timeout, more=more)
        if self.outstanding is None or self.outstanding.message_id == mid:
            self.outstanding = o
        else:
            self.extra[mid] = o
        sa.send([dgram, *more])
        sa.last_sent = now

    def retry_request(self, sa: IkeSA, task: Initiator, payloads: list[Payload], now: float) -> None:
        """Resend a task's request with new payloads under the same Message ID (COOKIE, INVALID_KE)."""
        o = self.outstanding
        assert o is not None
        self.outstanding = None
        self._send_request(sa, task, o.exchange, payloads, now, message_id=o.message_id)

    def retransmit(self, sa: IkeSA, now: float) -> bool:
        """Resend what is due (RFC 7296 §2.1); False when retransmits ran out and that ended the work."""
        cfg = sa.config
        for o in self.in_flight():
            if now < o.next_send:
                continue
            if o.tries >= cfg.retransmit_tries:
                reason = f"no response to {ExchangeType(o.exchange).name} after {o.tries + 1} transmissions"
                if o.task.gives_up_alone:
                    o.task.give_up(sa, reason)
                else:
                    sa.fail(0, reason)
                return False
            o.tries += 1
            sa.stats["retransmits"] += 1
            sa.send([o.datagram, *o.more])
            sa.last_sent = now
            o.next_send = now + cfg.retransmit_timeout * cfg.retransmit_base ** o.tries
        return True

    def timers(self) -> list[float]:
        """When each request in flight is due for retransmission."""
        return [o.next_send for o in self.in_flight()]

    def on_response(self, sa: IkeSA, data: bytes, mid: int, exchange: int, now: float,
                    hdr: Header | None = None) -> None:
        o = self.outstanding if self.outstanding is not None and self.outstanding.message_id == mid \
            else self.extra.get(mid)
        if o is None or mid != o.message_id or exchange != o.exchange:
            sa.stats["unexpected_response"] += 1
            return
        try:
            decoded = sa.decode(data, now, hdr)
        except CryptoError:
            sa.stats["integrity_failed"] += 1
            return
        except ParseError:
            sa.stats["malformed"] += 1
            return
        if decoded is None:
            return                      # a fragment: the rest of the response is still to come
        msg = decoded
        if msg.from_initiator == sa.initiator:
            sa.stats["malformed"] += 1
            return
        # an IKE_SA_INIT response names the responder's SPI (the task adopts it on success)
        if msg.spi_i != sa.spi_i or (exchange != _X_IKE_SA_INIT and msg.spi_r != sa.spi_r):
            sa.stats["wrong_spi"] += 1
            return
        if exchange == _X_IKE_SA_INIT:
            sa.init_response = data
        else:
            sa.last_heard = now
        task = o.task
        try:
            retry = task.process_response(sa, msg, now)
        except IkeError as exc:
            self._done(o)
            sa.fail(exc.notify, str(exc), detail=exc.detail, received=exc.received)
            return
        if retry:                       # the task resent its request itself
            return
        self._done(o)
        self.start_next(sa, now)

    def _done(self, o: Outstanding) -> None:
        """An exchange of ours got its answer: the oldest request still in flight becomes the head."""
        if self.outstanding is o:
            self.outstanding = None
            if self.extra:
                self.outstanding = self.extra.pop(min(self.extra))
        else:
            self.extra.pop(o.message_id, None)

    # -- requests we answer ---------------------------------------------------------------------

    def on_request(self, sa: IkeSA, data: bytes, mid: int, exchange: int, local_port: int, remote: Address,
                   now: float, hdr: Header | None = None) -> None:
        cached = self.responder.cached(mid)
        if cached is not None:
            if data == cached[0]:
                sa.stats["retransmitted_requests"] += 1
                sa.send(cached[1])
            elif data[16] == PayloadType.SKF:
                # RFC 7383 §2.6.1: only fragment 1 of a retransmitted request (it equals the one stored
                # with the response) triggers the response again; the other fragments are ignored
                sa.stats["fragment_retransmit_ignored"] += 1
            else:
                sa.stats["unexpected_request"] += 1
            return
        if not self.responder.acceptable(mid):
            sa.stats["invalid_message_id"] += 1
            return
        error_reply: ParseError | None = None
        try:
            decoded = sa.decode(data, now, hdr)
        except CryptoError:
            sa.stats["integrity_failed"] += 1
            return
        except ParseError as exc:
            # answerable only when the failure lies inside a verified SK payload, or in a clear
            # IKE_SA_INIT request, which is unauthenticated by nature (RFC 7296 §2.21.1, §3.10.1)
            if not (exc.authenticated or self._answerable(sa, data, exchange)):
                sa.stats["malformed"] += 1
                return
            error_reply = exc
            decoded = Message.parse_header_only(data)
        if decoded is None:
            return                      # a fragment: the rest of the request is still to come
        msg = decoded
        if sa.frag_first is not None:
            data = sa.frag_first        # a retransmission of this request repeats its fragment 1
        if msg.from_initiator == sa.initiator:
            sa.stats["malformed"] += 1
            return
        if exchange == _X_IKE_SA_INIT:
            spi_ok = msg.spi_r == bytes(8) and sa.spi_i in (b"", msg.spi_i)
        else:
            spi_ok = msg.spi_i == sa.spi_i and msg.spi_r == sa.spi_r
        if not spi_ok:
            sa.stats["wrong_spi"] += 1
            return
        if error_reply is not None:
            self._answer_error(sa, data, msg, error_reply, local_port, remote, now)
            return
        task = self._responder(sa, msg, data, now)
        if task is None:
            sa.stats["unsupported_exchange"] += 1
            return
        if exchange != _X_IKE_SA_INIT:
            sa.last_heard = now
        # the reply goes back where the request came from, from the port it reached (RFC 7296 §2.23:
        # a verified request from a new address/port, e.g. after floating to NAT-T, moves the SA there)
        sa.remote = remote
        sa.local_port = local_port
        fatal: IkeError | None = None
        try:
            payloads = task.process_request(sa, msg, now)
        except IkeError as exc:
            fatal = exc
            payloads = [NotifyPayload(exc.notify, exc.data)]
        if fatal is not None and exchange == _X_IKE_SA_INIT:
            # refusals of IKE_SA_INIT keep no state: zero responder SPI, sent in the clear
            resp: bytes | list[bytes] = Message(msg.spi_i, bytes(8), exchange, sa.header_flags(True), mid,
                                                payloads).serialize()
        else:
            resp = sa.encode_frames(exchange, mid, True, payloads)
        if exchange == _X_IKE_SA_INIT and fatal is None:
            sa.init_response = resp     # type: ignore[assignment]  # IKE_SA_INIT is never fragmented
        self._reply(sa, data, mid, resp, local_port, remote)
        if fatal is not None:
            # INVALID_KE_PAYLOAD is no failure: the initiator retries on a fresh responder SA
            sa.fail(fatal.notify, str(fatal), quiet=fatal.notify == Notify.INVALID_KE_PAYLOAD, detail=fatal.detail)
            return
        task.after_response(sa, now)

    def _responder(self, sa: IkeSA, msg: Message, data: bytes, now: float) -> Responder | None:
        """The task that answers this request in the IKE SA's state; None when none may."""
        exchange = msg.exchange
        if exchange == _X_IKE_SA_INIT and not sa.initiator and sa.state == _S_CREATED:
            sa.spi_i = msg.spi_i
            sa.init_request = data
            sa.state = _S_CONNECTING
            if sa.created_at is None:
                sa.created_at = now
            return IkeInitResponder()
        if exchange == _X_IKE_AUTH and not sa.initiator and sa.keys is not None and sa.state == _S_CONNECTING:
            if sa.addke_todo:
                # RFC 9370: IKE_AUTH before every negotiated additional key exchange ran is not answered
                sa.stats["ike_auth_before_addke"] += 1
                return None
            return IkeAuthResponder()
        if exchange == _X_IKE_INTERMEDIATE and not sa.initiator and sa.addke_todo and sa.keys is not None \
                and sa.state == _S_CONNECTING:
            return IkeIntermediateResponder()
        if exchange in (_X_CREATE_CHILD_SA, _X_INFORMATIONAL) and sa.state in (_S_ESTABLISHED, _S_REKEYED,
                                                                                _S_DELETING):
            return dispatch(sa, msg)
        return None

    def _reply(self, sa: IkeSA, request: bytes, mid: int, resp: bytes | list[bytes], local_port: int,
               remote: Address) -> None:
        cfg = sa.config
        natt = local_port == cfg.local_natt_port and local_port != cfg.local_port
        marker = NON_ESP_MARKER if natt else b""
        dgrams = [Datagram(marker + r, local_port, remote) for r in (resp if isinstance(resp, list) else [resp])]
        sa.send(dgrams)
        self.responder.answered(mid, request, dgrams)

    def _answerable(self, sa: IkeSA, data: bytes, exchange: int) -> bool:
        """Whether a request that failed to parse may be answered with an error notify."""
        if exchange == ExchangeType.IKE_SA_INIT:
            return not sa.initiator and sa.state == State.CREATED
        if sa.cipher_in is None or sa.state not in (State.ESTABLISHED, State.REKEYED, State.DELETING,
                                                     State.CONNECTING):
            return False
        try:    # an error raised while parsing the inner payloads comes after the ICV was verified
            outer = Message.parse(data)
            sk = outer.payloads[-1] if outer.payloads else None
            if not isinstance(sk, SKPayload):
                return False
            sa.cipher_in.unprotect(data, sk)
        except CryptoError:
            sa.stats["integrity_failed"] += 1
            return False
        except ParseError:
            return True
        return False

    def _answer_error(self, sa: IkeSA, data: bytes, msg: Message, exc: ParseError, local_port: int,
                      remote: Address, now: float) -> None:
        """INVALID_SYNTAX / UNSUPPORTED_CRITICAL_PAYLOAD for a request we cannot parse (RFC 7296 §3.10.1).

        IKE_SA_INIT: in the clear, and no state is kept.  Later exchanges: protected; an
        INVALID_SYNTAX in IKE_AUTH also ends the IKE SA, as the initiator will give up on it too."""
        sa.stats[f"answered_{Notify(exc.notify).name.lower()}"] += 1
        payloads: list[Payload] = [NotifyPayload(exc.notify, exc.data)]
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            resp = Message(msg.spi_i, bytes(8), msg.exchange, sa.header_flags(True), msg.message_id,
                           payloads).serialize()
            self._reply(sa, data, msg.message_id, resp, local_port, remote)
            sa.fail(exc.notify, str(exc), quiet=True)
            return
        resp = sa.encode(msg.exchange, msg.message_id, True, payloads)
        self._reply(sa, data, msg.message_id, resp, local_port, remote)
        sa.last_heard = now
        if msg.exchange == ExchangeType.IKE_AUTH:
            sa.fail(exc.notify, f"IKE_AUTH request could not be parsed: {exc}")


__all__ = ["TaskManager", "Outstanding"]
