"""IKEv2 message fragmentation (RFC 7383), sans-IO.

Sending: a protected message (IKE_AUTH onward) whose datagram would exceed the
fragment size is cut into Encrypted Fragment (SKF) payloads.  The plaintext of
the SK payload (the inner payload chain) is split into chunks; each chunk gets
its own IKE header (same SPIs, exchange, flags and Message ID; Next Payload
53) and is padded, encrypted and integrity-protected on its own, with the IKE
header, the SKF generic header and the Fragment Number / Total Fragments
fields as the authenticated data (§2.5).

Receiving: ``Reassembler`` keeps at most one partial message per direction
(requests from the peer, responses to us).  A fragment is verified before it
is kept (§2.6), so a forged one can neither fill memory nor evict a real
partial message; duplicates are ignored before any crypto is spent.  Limits on
the fragment count and the reassembled size bound memory, a partial message
is dropped after a timeout or when a verified fragment of another message
arrives, and every drop is counted with its reason.  When all fragments are
in, the caller gets the inner payloads as if the message had arrived whole.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from control.ike.constants import PayloadType
from control.ike.crypto import SKCipher
from control.ike.message import HEADER_LEN, Message
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import ParseError, Payload, SKFPayload

# Fragment size = the whole IP datagram, as strongSwan's charon.fragment_size counts it.  1280 is
# the IPv6 minimum link MTU and strongSwan's default for both families, so by default both ends of a
# mixed deployment cut the same way and no fragment needs IP fragmentation on any IPv6 path or any
# ordinary IPv4 path.  0 picks per family: 576 (the IPv4 reassembly minimum every host accepts) for
# IPv4 and 1280 for IPv6, for IPv4 paths with a really small MTU.
DEFAULT_FRAGMENT_SIZE = 1280
FAMILY_FRAGMENT_SIZE = {4: 576, 6: 1280}
MIN_FRAGMENT_SIZE = 280         # below this the fixed overheads leave (almost) no room for payload
MAX_FRAGMENT_SIZE = 65535
_IP_UDP = {4: 20 + 8, 6: 40 + 8}
_MARKER = 4                     # the non-ESP marker on the NAT-T port; always reserved, sizes stay simple
_SKF_HEAD = 4 + 4               # generic payload header + Fragment Number + Total Fragments

# Reassembly bounds (per IKE SA and direction)
MAX_FRAGMENTS = 64              # an RSA-4096 chain at 576-byte fragments needs about 15
MAX_REASSEMBLED = 65535         # plaintext bytes of one message: what an unfragmented message could carry
REASSEMBLY_TIMEOUT = 30.0       # seconds; the sender's retransmissions resend every fragment anyway

MODES = ("yes", "accept", "force", "no")


def message_limit(fragment_size: int, ip_version: int) -> int:
    """Bytes of IKE message that fit one fragment datagram of ``fragment_size`` (0: per family)."""
    size = fragment_size or FAMILY_FRAGMENT_SIZE[ip_version]
    return size - _IP_UDP[ip_version] - _MARKER


def fragment(cipher: SKCipher, msg: Message, payloads: list[Payload], limit: int) -> list[bytes] | None:
    """The SKF fragments carrying ``payloads`` for ``msg``'s header fields, or None when the message
    fits in ``limit`` bytes whole (then it goes out as one SK message: RFC 7383 fragments only what
    needs it)."""
    first, plain = serialize_payloads(payloads)
    return fragment_chain(cipher, msg, first, plain, limit)


def fragment_chain(cipher: SKCipher, msg: Message, first: int, plain: bytes, limit: int) -> list[bytes] | None:
    """``fragment`` for a payload chain already serialized: the caller encodes the whole message from
    the same bytes when it fits, instead of serializing the payloads twice."""
    if HEADER_LEN + 4 + cipher.sealed_len(len(plain)) <= limit:
        return None
    block = cipher.info.block
    room = limit - HEADER_LEN - _SKF_HEAD - cipher.overhead
    chunk = (room // block) * block - 1     # chunk + pad-length byte fill whole blocks, no padding
    if chunk < 1:
        raise ValueError(f"fragment size leaves no room for payload ({limit} bytes per IKE message)")
    total = -(-len(plain) // chunk)
    if total > 0xFFFF:
        raise ValueError("message needs more than 65535 fragments")
    out = []
    for i in range(total):
        piece = plain[i * chunk:(i + 1) * chunk]
        number = i + 1
        skf_len = _SKF_HEAD + cipher.sealed_len(len(piece))
        # the first fragment names the first inner payload; the others carry 0 (§2.5)
        head = msg.header(PayloadType.SKF, HEADER_LEN + skf_len) + struct.pack(
            "!BBHHH", first if number == 1 else 0, 0, skf_len, number, total)
        out.append(head + cipher.seal(head, piece))
    return out


@dataclass
class Whole:
    """A reassembled message: its inner payloads and what identifies a retransmission of it."""

    first_type: int             # type of the first inner payload (from fragment 1)
    plain: bytes                # the inner payload chain
    outer: list[Payload]        # unprotected payloads that preceded the SKF in fragment 1
    first_datagram: bytes       # fragment 1 as received: a retransmitted request repeats it (§2.6.1)

    def payloads(self) -> list[Payload]:
        """Outer + inner payloads.  A ParseError here comes from verified content: it carries
        ``authenticated = True`` so a responder may answer it (RFC 7296 §3.10.1)."""
        try:
            inner = parse_payloads(self.first_type, self.plain)
        except ParseError as exc:
            exc.authenticated = True
            raise
        return self.outer + inner


@dataclass
class _Partial:
    message_id: int
    exchange: int
    total: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    first_type: int = 0
    outer: list[Payload] = field(default_factory=list)
    first_datagram: bytes = b""


class Reassembler:
    """Collects the fragments of one message per direction; see the module docstring."""

    def __init__(self, stats: Counter[str], *, max_fragments: int = MAX_FRAGMENTS,
                 max_bytes: int = MAX_REASSEMBLED, timeout: float = REASSEMBLY_TIMEOUT):
        self.stats = stats
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._partial: dict[bool, _Partial] = {}    # keyed by "is a response"

    def _drop(self, reason: str) -> None:
        self.stats[f"fragment_dropped_{reason}"] += 1

    @property
    def deadline(self) -> float | None:
        """When the oldest partial message is given up (None when nothing is held)."""
        return min((p.started + self.timeout for p in self._partial.values()), default=None)

    @property
    def held_bytes(self) -> int:
        return sum(p.size + len(p.first_datagram) for p in self._partial.values())

    def expire(self, now: float) -> None:
        for key, p in list(self._partial.items()):
            if now >= p.started + self.timeout:
                del self._partial[key]
                self.stats["fragment_reassembly_timeout"] += 1

    def add(self, data: bytes, msg: Message, skf: SKFPayload, cipher: SKCipher, now: float) -> Whole | None:
        """One fragment (``data`` as received, ``msg`` its parsed form ending in ``skf``).

        Returns the whole message once the last missing fragment arrived, else None (the fragment was
        kept or dropped and counted).  Raises CryptoError for a fragment that fails its integrity check
        (the caller counts it like any badly protected message)."""
        self.expire(now)
        key = msg.is_response
        p = self._partial.get(key)
        same = p is not None and p.message_id == msg.message_id and p.exchange == msg.exchange
        # cheap checks first: nothing below costs crypto or changes state
        if skf.total > self.max_fragments:
            self._drop("too_many_fragments")
            return None
        if same and p is not None:
            if skf.total < p.total:      # a stale fragment from before the sender cut smaller (§2.6)
                self._drop("fewer_total")
                return None
            if skf.total == p.total and skf.number in p.chunks:
                self.stats["fragment_duplicate"] += 1
                return None
        head = data[:len(data) - len(skf.data)]
        plain = cipher.open(head, skf.data)         # CryptoError: forged or damaged, nothing kept
        # verified from here on
        if p is not None and not same:
            self._drop("superseded")                # a newer message started: the old partial goes
            p = None
        elif p is not None and skf.total > p.total:
            self._drop("resized")                   # the sender re-fragmented smaller: start over
            p = None
        if p is None:
            p = _Partial(msg.message_id, msg.exchange, skf.total, now)
            self._partial[key] = p
        if p.size + len(plain) > self.max_bytes:
            del self._partial[key]
            self._drop("too_big")
            return None
        p.chunks[skf.number] = plain
        p.size += len(plain)
        if skf.number == 1:
            p.first_type = skf.first
            p.outer = msg.payloads[:-1]
            p.first_datagram = data
        self.stats["fragments_kept"] += 1
        if len(p.chunks) < p.total:
            return None
        del self._partial[key]
        self.stats["fragmented_messages_received"] += 1
        return Whole(p.first_type, b"".join(p.chunks[i] for i in range(1, p.total + 1)), p.outer,
                     p.first_datagram)


__all__ = ["Reassembler", "Whole", "fragment", "message_limit", "DEFAULT_FRAGMENT_SIZE", "FAMILY_FRAGMENT_SIZE",
           "MIN_FRAGMENT_SIZE", "MAX_FRAGMENT_SIZE", "MAX_FRAGMENTS", "MAX_REASSEMBLED", "REASSEMBLY_TIMEOUT", "MODES"]
