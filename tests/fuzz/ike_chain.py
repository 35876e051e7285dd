"""The IKEv2 generic payload chain (RFC 7296 §3.2) as the fuzz mutators see it: walked without the product's
parser (so a broken chain can still be edited), and edited payload by payload with the lengths kept right
unless the edit is to the lengths themselves.  Used by ike_codec and ike_responder."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import atheris

# payload types (RFC 7296 §3.2, RFC 7383): the values a next-payload edit picks from
TYPES = [33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53, 0, 1, 49, 127, 128, 255]


def walk(first: int, chain: bytes) -> list[tuple[int, int, bytes]]:
    """(type, critical-byte, body) of each payload that is whole; stops at the first that is not."""
    out = []
    t, off = first, 0
    while t and off + 4 <= len(chain):
        nxt, crit, ln = struct.unpack_from("!BBH", chain, off)
        if ln < 4 or off + ln > len(chain):
            break
        out.append((t, crit, chain[off + 4:off + ln]))
        off += ln
        t = nxt
    return out


def build(payloads: list[tuple[int, int, bytes]]) -> tuple[int, bytes]:
    """(first type, chain) with every next-payload and length field right."""
    body = b""
    for k, (_t, crit, data) in enumerate(payloads):
        nxt = payloads[k + 1][0] if k + 1 < len(payloads) else 0
        body += struct.pack("!BBH", nxt, crit, min(4 + len(data), 0xFFFF)) + data
    return (payloads[0][0] if payloads else 0), body


def mutate_chain(first: int, chain: bytes, max_size: int, rng: random.Random,
                 mutate_bytes: Callable[[bytes, int], bytes] | None = None) -> tuple[int, bytes]:
    """One structural edit of a payload chain: a body mutated in place (lengths fixed up, so the edit
    reaches that payload's parser), a payload dropped, duplicated, moved or retyped, the critical bit, a
    length field set wrong, the chain cut or extended."""
    mb = mutate_bytes or atheris.Mutate
    ps = walk(first, chain)
    if not ps:
        return first, mb(chain, max_size)
    k = rng.randrange(len(ps))
    t, crit, data = ps[k]
    choice = rng.randrange(9)
    if choice <= 2:                             # the body, through libFuzzer's byte mutations
        ps[k] = (t, crit, mb(data, max(1, min(max_size, len(data) + 64))))
    elif choice == 3 and len(ps) > 1:
        del ps[k]
    elif choice == 4:
        ps.insert(rng.randrange(len(ps) + 1), ps[k])
    elif choice == 5 and len(ps) > 1:
        j = rng.randrange(len(ps))
        ps[k], ps[j] = ps[j], ps[k]
    elif choice == 6:
        ps[k] = (rng.choice(TYPES), crit, data)
    elif choice == 7:
        ps[k] = (t, crit ^ rng.choice([0x80, 0x01, 0x7F]), data)
    else:                                       # a length that lies: at the end of the rebuilt chain
        f, out = build(ps)
        b = bytearray(out)
        off = sum(4 + len(p[2]) for p in ps[:k])
        struct.pack_into("!H", b, off + 2, rng.choice([0, 3, 4, 5, len(data) + 3, len(data) + 5, 0xFFFF]))
        return f, bytes(b[:max_size])
    f, out = build(ps)
    return f, out[:max_size]


HEADER_LEN = 28


def mutate_message(msg: bytes, max_size: int, rng: random.Random) -> bytes:
    """One edit of a whole IKE message: a header field (version, exchange, flags, message ID, length), or
    its payload chain (``mutate_chain``) with the header's first-payload and, mostly, length fields kept
    right."""
    if len(msg) < HEADER_LEN or rng.randrange(5) == 0:
        return atheris.Mutate(msg, max_size)
    hdr = bytearray(msg[:HEADER_LEN])
    if rng.randrange(4) == 0:
        hdr[rng.choice([16, 17, 18, 19, 20, 23, 24, 27])] = rng.randrange(256)
        return bytes(hdr) + msg[HEADER_LEN:]
    first, chain = mutate_chain(hdr[16], msg[HEADER_LEN:], max(1, max_size - HEADER_LEN), rng)
    hdr[16] = first
    if rng.randrange(4):
        struct.pack_into("!I", hdr, 24, HEADER_LEN + len(chain))
    return (bytes(hdr) + chain)[:max_size]
