"""Fuzz target: the IKEv2 message codec, outside and inside the SK payload, whole and in RFC 7383 fragments.

An input is ``kind || fragmenting || body``:

- ``RAW``: body is a whole datagram.  ``Message.parse`` may raise ParseError and nothing else; the
  datagram, with its SPIs set to those of a live IKE SA, then goes into that SA's ``receive_datagram``
  (the sans-IO entry the daemon calls), which must not raise at all.
- ``AUTH`` / ``CHILD`` / ``INFO``: body is ``first payload type || inner payload chain`` of an IKE_AUTH,
  CREATE_CHILD_SA or INFORMATIONAL request.  Each input gets a fresh in-memory pair (tests/support/
  ike_pair.py: real DH, real PSK authentication), half-open for IKE_AUTH, established for the others;
  the chain is sealed with the initiator's real SK keys (so it passes the integrity check and reaches
  the inner payload parsers and the exchange handlers behind them) and delivered to the responder,
  whose answers then go back to the initiator.  ``parse_payloads`` of the chain may raise ParseError only.
- with ``fragmenting`` bit 0 set, the sealed request travels as SKF fragments (fragment size, order,
  duplicates, a lost one, a wrong Total Fragments or Fragment Number -- each fragment sealed validly,
  so the reassembler's own checks decide).

The seeds are the requests our initiator really sends (decrypted from a pair's wire), with what depends
on the pair's random state (child SPIs, the AUTH value) replaced by placeholders that each input puts
back from its own pair: a seed's IKE_AUTH authenticates, its rekey names a CHILD SA that exists.
"""

from __future__ import annotations

import random
import struct

import atheris
from support.ike_pair import A, B, Pair, cfgs, child, up

from control.ike.constants import ExchangeType, Flag, PayloadType
from control.ike.message import HEADER_LEN, Message
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import ParseError
from fuzz import ike_chain
from fuzz.harness import FuzzFailure

RAW, AUTH, CHILD, INFO = 0, 1, 2, 3
EXCHANGE = {AUTH: ExchangeType.IKE_AUTH, CHILD: ExchangeType.CREATE_CHILD_SA, INFO: ExchangeType.INFORMATIONAL}
DAMAGES = ("none", "reversed", "duplicate", "lost", "total", "number", "first", "shuffled")
SPI_IN, SPI_OUT = b"CIN!", b"COU!"          # placeholders of the initiator's CHILD SA SPIs
AUTH_FILL = 0xA5                            # a placeholder AUTH value: this byte, as long as the real one


# ---- pairs and their live values ------------------------------------------------------------------------

def half_open() -> tuple[Pair, bytes]:
    """A pair past IKE_SA_INIT whose IKE_AUTH request was lost: (pair, that request)."""
    lost: list[bytes] = []

    def drop(side: str, n: int, data: bytes) -> bool:
        if side == "a" and n == 1:
            lost.append(data)
            return True
        return False
    p = Pair(*cfgs(), drop=drop).run()
    return p, lost[0]


def inner_of(p: Pair, datagram: bytes) -> tuple[int, bytes]:
    """(first type, inner chain) of a request from a, decrypted with b's keys."""
    msg = Message.parse(datagram)
    responder = p.r if p.r.state.name == "CONNECTING" else p.ike("b")
    return serialize_payloads(responder.cipher_in.unprotect(datagram, msg.payloads[-1]))


def auth_body(first: int, chain: bytes) -> bytes | None:
    for t, _c, body in ike_chain.walk(first, chain):
        if t == PayloadType.AUTH:
            return body
    return None


def placeholders(first: int, chain: bytes, spi_in: int | None, spi_out: int | None) -> bytes:
    ps = []
    for t, c, body in ike_chain.walk(first, chain):
        if t == PayloadType.AUTH:
            body = body[:4] + bytes([AUTH_FILL]) * (len(body) - 4)
        if spi_in is not None:
            body = body.replace(struct.pack("!I", spi_in), SPI_IN)
        if spi_out is not None:
            body = body.replace(struct.pack("!I", spi_out), SPI_OUT)
        ps.append((t, c, body))
    return ike_chain.build(ps)[1]


def restore(first: int, chain: bytes, live_auth: bytes | None, spi_in: int | None, spi_out: int | None) -> bytes:
    """The chain with this pair's values where the placeholders are.  Every value is as long as its
    placeholder, so the chain's own length fields (right or wrong) stay as they were."""
    b = bytearray(chain)
    if live_auth is not None:
        off = 0
        for t, _c, body in ike_chain.walk(first, chain):
            if t == PayloadType.AUTH and len(body) == len(live_auth) \
                    and body[4:] == bytes([AUTH_FILL]) * (len(body) - 4):
                b[off + 8:off + 4 + len(body)] = live_auth[4:]
            off += 4 + len(body)
    out = bytes(b)
    if spi_in is not None:
        out = out.replace(SPI_IN, struct.pack("!I", spi_in))
    if spi_out is not None:
        out = out.replace(SPI_OUT, struct.pack("!I", spi_out))
    return out


# ---- fragments ------------------------------------------------------------------------------------------

def fragments(cipher, msg: Message, first: int, plain: bytes, ctl: int, rng: random.Random) -> list[bytes]:
    """SKF datagrams (RFC 7383 §2.5) for the chain, each validly sealed, damaged as ``ctl`` says."""
    size = 60 + 60 * (ctl >> 4)       # 60..960 bytes: a seed chain comes in several pieces
    room = max(1, size - HEADER_LEN - 8 - cipher.overhead - cipher.info.block)
    pieces = [plain[i:i + room] for i in range(0, len(plain), room)] or [b""]
    total = len(pieces)
    damage = DAMAGES[(ctl >> 1) & 7]
    frames = []
    for i, piece in enumerate(pieces):
        number, tot, fst = i + 1, total, first if i == 0 else 0
        if damage == "total" and i == total - 1:
            tot = total + rng.choice([-1, 1, 60, 0xFFFF - total])
        elif damage == "number" and i == total - 1:
            number = rng.choice([0, total + 1, 0xFFFF])
        elif damage == "first" and i == total - 1:
            fst = rng.choice([PayloadType.SA, PayloadType.NOTIFY, 255])
        skf_len = 8 + cipher.sealed_len(len(piece))
        head = msg.header(PayloadType.SKF, HEADER_LEN + skf_len) + struct.pack(
            "!BBHHH", fst, 0, skf_len, number & 0xFFFF, max(0, tot) & 0xFFFF)
        frames.append(head + cipher.seal(head, piece))
    if damage == "reversed":
        frames.reverse()
    elif damage == "duplicate":
        frames.insert(rng.randrange(len(frames) + 1), rng.choice(frames))
    elif damage == "lost" and len(frames) > 1:
        del frames[rng.randrange(len(frames))]
    elif damage == "shuffled":
        rng.shuffle(frames)
    return frames


# ---- the target -----------------------------------------------------------------------------------------

def _exchange(p: Pair, init, resp, rounds: int = 8) -> None:
    """The answers between the two SAs, delivered straight to each (not through the pair's routing,
    which expects well-formed datagrams): the initiator parses whatever the responder made of the
    input, and the responder what comes back."""
    for _ in range(rounds):
        moved = False
        for src, dst, addr in ((resp, init, B), (init, resp, A)):
            for d in src.datagrams_to_send():
                moved = True
                dst.receive_datagram(d.data, d.remote[1], (addr[0], d.local_port), p.now)
        if not moved:
            return


def _parse_only_parse_error(what: str, fn, *args) -> None:
    try:
        fn(*args)
    except ParseError:
        pass
    except Exception as exc:  # noqa: BLE001 - the oracle: nothing but the codec's own error
        raise FuzzFailure(f"{what}: {type(exc).__name__}: {exc}") from exc


def _raw(ctl: int, body: bytes) -> None:
    _parse_only_parse_error("Message.parse", Message.parse, body)
    p = up()
    b = p.ike("b")
    data = body
    if len(data) >= 16:
        data = (b.spi_i + b.spi_r + data[16:]) if ctl & 2 else data
    port = 4500 if ctl & 1 else 500
    if port == 4500:
        data = b"\0\0\0\0" + data
    b.receive_datagram(data, port, (A[0], port), p.now)
    _exchange(p, p.ike("a"), b)


def _inner(kind: int, ctl: int, body: bytes) -> None:
    if not body:
        return
    first, chain = body[0], body[1:]
    _parse_only_parse_error("parse_payloads", parse_payloads, first, chain)
    if kind == AUTH:
        p, real = half_open()
        init, resp = p.i, p.r
        live_auth = auth_body(*inner_of(p, real))
        mid, spi_in, spi_out = 1, None, None
    else:
        p = up()
        init, resp = p.ike("a"), p.ike("b")
        live_auth = None
        c = init.children[0]
        mid, spi_in, spi_out = init.task_manager.next_mid, c.spi_in, c.spi_out
        init.task_manager.next_mid += 1
    chain = restore(first, chain, live_auth, spi_in, spi_out)
    msg = Message(init.spi_i, init.spi_r, EXCHANGE[kind], Flag.INITIATOR, mid)
    if ctl & 1:
        datagrams = fragments(init.cipher_out, msg, first, chain, ctl, random.Random(chain))
    else:
        datagrams = [init.cipher_out.protect_chain(msg, first, chain)]
    for d in datagrams:
        resp.receive_datagram(d, 500, A, p.now)
    _exchange(p, init, resp)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    kind, ctl, body = data[0] % 4, data[1], data[2:]
    if kind == RAW:
        _raw(ctl, body)
    else:
        _inner(kind, ctl, body)


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if len(data) < 3 or rng.randrange(40) == 0:
        return atheris.Mutate(data, max_size)
    head, body = bytearray(data[:2]), data[2:]
    if rng.randrange(6) == 0:
        head[1] = rng.randrange(256)           # fragmenting on/off, another size, another damage
        if rng.randrange(2):
            return bytes(head) + body          # the same chain another way
    if head[0] % 4 == RAW:
        return bytes(head) + ike_chain.mutate_message(body, max(1, max_size - 2), rng)
    first, chain = ike_chain.mutate_chain(body[0], body[1:], max(1, max_size - 3), rng)
    return bytes(head) + bytes([first]) + chain


def seeds() -> list[bytes]:
    """The requests our initiator really sends, decrypted (with placeholders), each also fragmented, and
    every datagram of those exchanges as it went over the wire."""
    out: list[bytes] = []
    p, real = half_open()
    f, chain = inner_of(p, real)
    inner = [(AUTH, f, placeholders(f, chain, None, None))]
    raw = list(p.wire)

    def requests_from_a(action) -> None:
        q = up()
        a = q.ike("a")
        c = a.children[0]
        action(q, a, c)
        sent = [d.data for d in a.datagrams_to_send()]
        for d in sent:
            msg = Message.parse(d)
            fi, ch = inner_of(q, d)
            kind = CHILD if msg.exchange == ExchangeType.CREATE_CHILD_SA else INFO
            inner.append((kind, fi, placeholders(fi, ch, c.spi_in, c.spi_out)))
        raw.extend(q.wire)
        raw.extend(sent)

    requests_from_a(lambda q, a, c: a.rekey_child(q.now, c.spi_in))
    requests_from_a(lambda q, a, c: a.create_child(q.now, child("second", local="10.10.0.0/16",
                                                                 remote="10.20.0.0/16")))
    requests_from_a(lambda q, a, c: a.rekey_ike(q.now))
    requests_from_a(lambda q, a, c: a.dpd(q.now))
    requests_from_a(lambda q, a, c: a.delete_child(q.now, c.spi_in))
    requests_from_a(lambda q, a, c: a.delete(q.now))
    for kind, fi, ch in inner:
        out.append(bytes([kind, 0, fi]) + ch)
        out.append(bytes([kind, 1 | (1 << 4), fi]) + ch)          # in 120-byte fragments
    for d in raw:
        out.append(bytes([RAW, 2]) + d)
    return out
