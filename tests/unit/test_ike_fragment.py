"""IKEv2 message fragmentation (RFC 7383) between two of our IKE SAs, in process, and the reassembler alone.

Certificates big enough to need fragments (RSA-4096 with an intermediate CA, sent as two CERT payloads)
or a small fragment size with ECDSA; the link between the two SAs can reorder, duplicate, drop and tamper
with datagrams.  Each fragment of one IKE_AUTH is also decrypted here with `cryptography` alone, as RFC
7383 §2.5 describes the protection, to show the layout is the RFC's and not just symmetric with our own
reader.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ike_pair import assert_esp_works, child
from support.pki import CA, make_cert, name, new_key

from control.config import ConfigError, parse_config
from control.ike.certs import Credentials
from control.ike.config import Identity, IkeConfig
from control.ike.constants import ExchangeType, Flag, Notify, PayloadType
from control.ike.crypto import CryptoError, SKCipher
from control.ike.events import ChildSaEstablished, IkeSaEstablished, IkeSaFailed, State
from control.ike.fragment import Reassembler, fragment, message_limit
from control.ike.message import Message
from control.ike.payload_chain import parse_payloads
from control.ike.payloads import CertPayload, IDPayload, NoncePayload, NotifyPayload, SKFPayload, VendorPayload
from control.ike.proposals import ike_suite, parse_proposals
from control.ike.sa import IkeSA

I_ADDR, R_ADDR = ("192.0.2.1", 500), ("198.51.100.2", 500)


# -- PKIs ---------------------------------------------------------------------------------------

class Pki:
    """A root CA, an intermediate and one certificate per gateway issued by the intermediate."""

    def __init__(self, kind: str):
        self.root = CA("frag root CA", kind)
        self.mid = CA("frag intermediate CA", kind, parent=self.root)
        key = new_key(kind)          # one end-entity key for both gateways: RSA-4096 keys are slow to make
        self.certs = {gw: (make_cert(name(gw), key.public_key(), self.mid.name, self.mid.key,
                                     sans=[f"{gw}.example"]), key) for gw in ("gw-a", "gw-b")}

    def config(self, gw: str, peer: str, *, initiator: bool, proposals: str = "aes128gcm16-prfsha256-x25519",
               **kw) -> IkeConfig:
        cert, key = self.certs[gw]
        kid = child() if initiator else child(local="10.2.0.0/16", remote="10.1.0.0/16")
        return IkeConfig(Identity.from_string(f"{gw}.example"), b"", Identity.from_string(f"{peer}.example"),
                         ike_proposals=proposals, children=[kid], local_auth="pubkey", remote_auth="pubkey",
                         credentials=Credentials(cert, key, [self.mid.cert]), cacerts=[self.root.cert], **kw)

    def pair(self, kw_i: dict | None = None, kw_r: dict | None = None, **both) -> tuple[IkeConfig, IkeConfig]:
        return (self.config("gw-a", "gw-b", initiator=True, **both, **(kw_i or {})),
                self.config("gw-b", "gw-a", initiator=False, **both, **(kw_r or {})))


@pytest.fixture(scope="module")
def rsa4096() -> Pki:
    return Pki("rsa4096")


_P256: Pki | None = None


def p256() -> Pki:
    global _P256
    if _P256 is None:
        _P256 = Pki("p256")
    return _P256


# -- a link that can misbehave ----------------------------------------------------------------------

class Link:
    """Carries each flight (what one side sent in one go) to the other side through ``mangle(direction,
    flight number, datagrams) -> datagrams``, which may reorder, duplicate, drop or tamper."""

    def __init__(self, ci: IkeConfig, cr: IkeConfig, mangle=None):
        self.i = IkeSA(ci, initiator=True, local=I_ADDR, remote=R_ADDR)
        self.r = IkeSA(cr, initiator=False, local=R_ADDR, remote=I_ADDR)
        self.mangle = mangle or (lambda direction, n, datas: datas)
        self.now = 0.0
        self.flights: dict[str, list[list[bytes]]] = {"i2r": [], "r2i": []}
        self.events: dict[str, list] = {"i": [], "r": []}

    def run(self, steps: int = 60) -> Link:
        if self.i.state == State.CREATED:
            self.i.initiate(self.now)
        for _ in range(steps):
            moved = False
            for direction, src, dst, addr in (("i2r", self.i, self.r, I_ADDR), ("r2i", self.r, self.i, R_ADDR)):
                out = [d.data for d in src.datagrams_to_send()]
                if not out:
                    continue
                moved = True
                n = len(self.flights[direction])
                self.flights[direction].append(out)
                for data in self.mangle(direction, n, list(out)):
                    dst.receive_datagram(data, 500, addr, self.now)
            for side, sa in (("i", self.i), ("r", self.r)):
                while (e := sa.next_event()) is not None:
                    self.events[side].append(e)
            if moved:
                continue
            timers = [t for t in (self.i.get_timer(), self.r.get_timer()) if t is not None]
            if not timers or self.up:
                break
            self.now = min(timers)
            for sa in (self.i, self.r):
                t = sa.get_timer()
                if t is not None and t <= self.now:
                    sa.handle_timer(self.now)
        return self

    @property
    def up(self) -> bool:
        return bool(self.of("i", ChildSaEstablished) and self.of("r", ChildSaEstablished))

    def of(self, side: str, cls: type) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]

    def assert_up(self) -> None:
        assert not self.of("i", IkeSaFailed) and not self.of("r", IkeSaFailed), self.events
        (ci,), (cr,) = self.of("i", ChildSaEstablished), self.of("r", ChildSaEstablished)
        assert_esp_works(ci, cr)


def is_fragment(data: bytes) -> bool:
    return data[16] == PayloadType.SKF


def fragment_fields(data: bytes) -> tuple[int, int, int]:
    """(next payload of the SKF header, Fragment Number, Total Fragments)."""
    nxt = data[28]
    number, total = struct.unpack_from("!HH", data, 32)
    return nxt, number, total


# -- end to end --------------------------------------------------------------------------------------

def test_rsa4096_chain_is_fragmented_both_ways(rsa4096: Pki) -> None:
    link = Link(*rsa4096.pair()).run()
    link.assert_up()
    # IKEV2_FRAGMENTATION_SUPPORTED both ways in IKE_SA_INIT (RFC 7383 §2.3): no data, no SPI
    for flight in (link.flights["i2r"][0], link.flights["r2i"][0]):
        (n,) = Message.parse(flight[0]).notifies(Notify.IKEV2_FRAGMENTATION_SUPPORTED)
        assert (n.data, n.spi, n.protocol) == (b"", b"", 0)
    assert link.i.peer_fragmentation and link.r.peer_fragmentation
    limit = message_limit(1280, 4)
    assert limit == 1280 - 20 - 8 - 4
    for direction, side in (("i2r", link.i), ("r2i", link.r)):
        auth = link.flights[direction][1]
        assert len(auth) >= 3 and all(is_fragment(d) and len(d) <= limit for d in auth)
        fields = [fragment_fields(d) for d in auth]
        assert [f[1] for f in fields] == list(range(1, len(auth) + 1))
        assert {f[2] for f in fields} == {len(auth)}
        assert fields[0][0] == (PayloadType.IDi if direction == "i2r" else PayloadType.IDr)
        assert all(f[0] == 0 for f in fields[1:])       # only fragment 1 names the first inner payload
        assert side.stats["fragmented_messages_sent"] == 1 and side.stats["fragments_sent"] == len(auth)
    assert link.r.stats["fragmented_messages_received"] == 1 and link.i.stats["fragmented_messages_received"] == 1


def _independent_open(data: bytes, key: bytes) -> tuple[int, bytes]:
    """RFC 7383 §2.5 with AES-GCM (RFC 5282) straight from `cryptography`: the AAD is the IKE header, the SKF
    generic header and the Fragment Number / Total Fragments; 8-byte IV after them; padding at the end."""
    aad, iv, ct = data[:36], data[36:44], data[44:]
    plain = AESGCM(key[:-4]).decrypt(key[-4:] + iv, ct, aad)
    return data[28], plain[:len(plain) - plain[-1] - 1]


def test_fragments_decrypt_independently(rsa4096: Pki) -> None:
    link = Link(*rsa4096.pair()).run()
    link.assert_up()
    keys = link.i.keys
    for flight, key, id_type in ((link.flights["i2r"][1], keys.sk_ei, PayloadType.IDi),
                                 (link.flights["r2i"][1], keys.sk_er, PayloadType.IDr)):
        parts = [_independent_open(d, key) for d in flight]
        inner = parse_payloads(parts[0][0], b"".join(p for _, p in parts))
        assert inner[0].type == id_type
        certs = [p.data for p in inner if isinstance(p, CertPayload) and not p.request]
        gw = "gw-a" if id_type == PayloadType.IDi else "gw-b"
        from cryptography.hazmat.primitives.serialization import Encoding
        assert certs == [rsa4096.certs[gw][0].public_bytes(Encoding.DER), rsa4096.mid.cert.public_bytes(Encoding.DER)]


def test_cbc_fragments_verify_independently() -> None:
    """AES-CBC with HMAC-SHA-384-192: the ICV is an HMAC over every byte before it (IKE header, SKF header,
    numbers, IV, ciphertext), checked and decrypted with `cryptography` and `hmac` alone."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    link = Link(*p256().pair(proposals="aes256-sha384-ecp384", fragment_size=280)).run()
    link.assert_up()
    keys = link.i.keys
    chunks = []
    for d in link.flights["i2r"][1]:
        icv, body = d[-24:], d[:-24]
        assert hmac.compare_digest(hmac.new(keys.sk_ai, body, hashlib.sha384).digest()[:24], icv)
        dec = Cipher(algorithms.AES(keys.sk_ei), modes.CBC(body[36:52])).decryptor()
        plain = dec.update(body[52:]) + dec.finalize()
        chunks.append(plain[:len(plain) - plain[-1] - 1])
    inner = parse_payloads(link.flights["i2r"][1][0][28], b"".join(chunks))
    assert [p.type for p in inner][:2] == [PayloadType.IDi, PayloadType.CERT]


@pytest.mark.parametrize("proposals", ["aes256-sha384-ecp384", "chacha20poly1305-prfsha256-x25519",
                                       "aes256gcm16-prfsha512-x448"])
def test_other_ciphers_small_fragments(proposals: str) -> None:
    """CBC + HMAC (16-byte IV, block padding, ICV after the ciphertext), ChaCha20 and AES-256-GCM."""
    link = Link(*p256().pair(proposals=proposals, fragment_size=280)).run()
    link.assert_up()
    auth = link.flights["i2r"][1]
    assert len(auth) >= 3 and all(len(d) <= message_limit(280, 4) for d in auth)


def test_family_default_size() -> None:
    """fragment_size 0: 576-byte IP datagrams over IPv4 (1280 over IPv6), as charon's fragment_size = 0."""
    assert message_limit(0, 4) == 576 - 28 - 4 and message_limit(0, 6) == 1280 - 48 - 4
    link = Link(*p256().pair(fragment_size=0)).run()
    link.assert_up()
    assert all(len(d) <= 544 for d in link.flights["i2r"][1]) and len(link.flights["i2r"][1]) >= 2


def test_small_messages_are_not_fragmented() -> None:
    link = Link(*p256().pair()).run()         # P-256 certificates fit one 1280-byte datagram
    link.assert_up()
    assert not any(is_fragment(d) for f in link.flights["i2r"] + link.flights["r2i"] for d in f)
    assert link.i.peer_fragmentation and not link.i.stats["fragments_sent"]


@pytest.mark.parametrize("mode_i,mode_r,announced_i,announced_r,frag_i,frag_r", [
    ("yes", "no", True, False, False, False),       # not negotiated: whole (IP-fragmented) messages
    ("no", "yes", False, False, False, False),      # the responder only answers an announcement
    ("yes", "accept", True, True, True, False),     # accept: announce and receive, but send whole
    ("force", "yes", True, True, True, True),       # force is yes for IKEv2
])
def test_negotiation_modes(mode_i, mode_r, announced_i, announced_r, frag_i, frag_r) -> None:
    link = Link(*p256().pair({"fragmentation": mode_i}, {"fragmentation": mode_r}, fragment_size=280)).run()
    link.assert_up()
    init_req, init_resp = Message.parse(link.flights["i2r"][0][0]), Message.parse(link.flights["r2i"][0][0])
    assert bool(init_req.notifies(Notify.IKEV2_FRAGMENTATION_SUPPORTED)) == announced_i
    assert bool(init_resp.notifies(Notify.IKEV2_FRAGMENTATION_SUPPORTED)) == announced_r
    assert all(is_fragment(d) == frag_i for d in link.flights["i2r"][1])
    assert all(is_fragment(d) == frag_r for d in link.flights["r2i"][1])
    if not frag_i:
        assert len(link.flights["i2r"][1]) == 1 and len(link.flights["i2r"][1][0]) > message_limit(280, 4)


def _auth_flight(direction: str, n: int) -> bool:
    return direction == "i2r" and n == 1


@pytest.mark.parametrize("how", ["reverse", "shuffle", "duplicate", "interleave-duplicates"])
def test_out_of_order_and_duplicates(rsa4096: Pki, how: str) -> None:
    rng = random.Random(7)

    def mangle(direction, n, datas):
        if not _auth_flight(direction, n):
            return datas
        if how == "reverse":
            return datas[::-1]
        if how == "shuffle":
            rng.shuffle(datas)
            return datas
        if how == "duplicate":
            return [d for d in datas for _ in range(2)]
        return datas + datas[::-1]
    link = Link(*rsa4096.pair(), mangle=mangle).run()
    link.assert_up()
    count = len(link.flights["i2r"][1])
    dups = {"reverse": 0, "shuffle": 0, "duplicate": count, "interleave-duplicates": count}[how]
    # after the last fragment the message is whole and answered: later copies are retransmissions
    assert link.r.stats["fragment_duplicate"] + link.r.stats["fragment_retransmit_ignored"] \
        + link.r.stats["retransmitted_requests"] == dups
    assert link.r.stats["fragments_kept"] == count and link.r.stats["fragmented_messages_received"] == 1
    if how == "interleave-duplicates":      # fragment 1 came again after the answer: the cached one is resent
        assert link.r.stats["retransmitted_requests"] == 1
        resp = link.flights["r2i"][1]               # the answer, then the same fragments again
        half = len(resp) // 2
        assert half >= 3 and resp[:half] == resp[half:] and link.i.stats["unexpected_response"] == half


def test_missing_fragment_completed_by_retransmission(rsa4096: Pki) -> None:
    link = Link(*rsa4096.pair(), mangle=lambda d, n, datas: datas[:1] + datas[2:] if _auth_flight(d, n)
                else datas).run()
    link.assert_up()
    count = len(link.flights["i2r"][1])
    assert link.flights["i2r"][2] == link.flights["i2r"][1]        # every fragment resent, byte for byte
    assert link.i.stats["retransmits"] == 1
    # the resent fragment 1 was held already (no crypto spent), fragment 2 completed the message, and the
    # rest then belonged to an answered request
    assert link.r.stats["fragment_duplicate"] == 1
    assert link.r.stats["fragment_retransmit_ignored"] == count - 2
    assert link.r.stats["fragments_kept"] == count


def test_retransmitted_fragmented_request_answered_from_cache(rsa4096: Pki) -> None:
    link = Link(*rsa4096.pair(), mangle=lambda d, n, datas: [] if (d, n) == ("r2i", 1) else datas).run()
    link.assert_up()
    count = len(link.flights["i2r"][1])
    # RFC 7383 §2.6.1: fragment 1 of the retransmitted request triggers the cached response, the rest is ignored
    assert link.r.stats["retransmitted_requests"] == 1
    assert link.r.stats["fragment_retransmit_ignored"] == count - 1
    assert link.flights["r2i"][2] == link.flights["r2i"][1] and len(link.flights["r2i"][1]) >= 3
    assert link.r.stats["fragmented_messages_received"] == 1


@pytest.mark.parametrize("where", ["ciphertext", "icv", "fragment-number", "header-flags"])
def test_tampered_fragment_is_never_kept(rsa4096: Pki, where: str) -> None:
    def mangle(direction, n, datas):
        if not _auth_flight(direction, n):
            return datas
        bad = bytearray(datas[1])
        if where == "ciphertext":
            bad[60] ^= 1
        elif where == "icv":
            bad[-1] ^= 0x80
        elif where == "fragment-number":
            bad[32:34] = struct.pack("!H", 3)   # claims to be fragment 3 (not held yet): authenticated
        else:
            bad[19] ^= 0x10                     # the header's Version flag: authenticated data too
        return [datas[0], bytes(bad)] + datas[2:]
    link = Link(*rsa4096.pair(), mangle=mangle).run()
    link.assert_up()                # the retransmission brings the real fragment 2
    assert link.r.stats["integrity_failed"] == 1
    assert link.r.stats["fragments_kept"] == len(link.flights["i2r"][1])
    assert link.i.stats["retransmits"] == 1


def test_responder_fragment_timeout_drops_partial(rsa4096: Pki) -> None:
    """Only fragment 1 arrives and the initiator never retransmits: the partial message times out."""
    ci, cr = rsa4096.pair()
    ci.retransmit_tries = 0
    cr.half_open_timeout = 1000.0
    link = Link(ci, cr, mangle=lambda d, n, datas: datas[:1] if _auth_flight(d, n) else datas)
    link.run(steps=3)
    assert link.r.stats["fragments_kept"] == 1
    assert link.r.get_timer() == 30.0           # the reassembly deadline comes before the half-open one
    link.r.handle_timer(30.0)
    assert link.r.stats["fragment_reassembly_timeout"] == 1 and link.r.get_timer() == 1000.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_ordering_and_duplication_brings_the_sa_up(data) -> None:
    """Each multi-fragment flight is permuted and some datagrams duplicated (hypothesis draws how)."""
    def mangle(direction, n, datas):
        if len(datas) < 2:
            return datas
        order = data.draw(st.permutations(range(len(datas))))
        extra = data.draw(st.lists(st.integers(0, len(datas) - 1), max_size=4))
        return [datas[i] for i in order] + [datas[i] for i in extra]
    link = Link(*p256().pair(fragment_size=300), mangle=mangle).run()
    link.assert_up()
    assert len(link.flights["i2r"][1]) >= 3


# -- the reassembler alone -----------------------------------------------------------------------------

def cipher() -> SKCipher:
    suite = ike_suite(parse_proposals("aes128gcm16-prfsha256-x25519", "ike")[0])
    return SKCipher(suite, os.urandom(20), b"")


def frags(c: SKCipher, mid: int = 1, size: int = 900, limit: int = 200, exchange=ExchangeType.IKE_AUTH,
          response: bool = False, payloads: list | None = None) -> tuple[list[bytes], list]:
    if payloads is None:
        payloads = [IDPayload(2, b"gw-a.example"), VendorPayload(os.urandom(size)), NoncePayload(os.urandom(32))]
    flags = Flag.INITIATOR | (Flag.RESPONSE if response else 0)
    out = fragment(c, Message(b"i" * 8, b"r" * 8, exchange, flags, mid), payloads, limit)
    assert out is not None
    return out, payloads


def feed(r: Reassembler, c: SKCipher, data: bytes, now: float = 0.0):
    msg = Message.parse(data)
    skf = msg.payloads[-1]
    assert isinstance(skf, SKFPayload)
    return r.add(data, msg, skf, c, now)


def test_reassembler_whole_message_and_limits() -> None:
    c = cipher()
    out, payloads = frags(c)
    assert fragment(c, Message(b"i" * 8, b"r" * 8, 35, 8, 1), payloads[:1], 200) is None   # fits: not cut
    stats: Counter[str] = Counter()
    r = Reassembler(stats)
    results = [feed(r, c, d) for d in out]
    assert results[:-1] == [None] * (len(out) - 1)
    assert results[-1].payloads() == payloads and results[-1].first_datagram == out[0]
    assert r.held_bytes == 0 and r.deadline is None
    # too many fragments: refused before any crypto
    stats.clear()
    r = Reassembler(stats, max_fragments=len(out) - 1)
    assert all(feed(r, c, d) is None for d in out)
    assert stats["fragment_dropped_too_many_fragments"] == len(out) and r.held_bytes == 0
    # too many bytes: the partial message is dropped as soon as it would exceed the bound
    stats.clear()
    r = Reassembler(stats, max_bytes=300)
    assert all(feed(r, c, d) is None for d in out)
    assert stats["fragment_dropped_too_big"] >= 1 and r.held_bytes <= 300 + 200


def test_reassembler_rejects_tampering_and_other_keys() -> None:
    c = cipher()
    out, _ = frags(c)
    stats: Counter[str] = Counter()
    r = Reassembler(stats)
    bad = bytearray(out[0])
    bad[-5] ^= 1
    with pytest.raises(CryptoError):
        feed(r, c, bytes(bad))
    with pytest.raises(CryptoError):
        feed(r, cipher(), out[0])           # another key
    assert r.held_bytes == 0 and r.deadline is None
    assert feed(r, c, out[0]) is None and r.deadline == 30.0


def test_reassembler_new_message_id_timeout_and_resizing() -> None:
    c = cipher()
    first, _ = frags(c, mid=1)
    second, payloads2 = frags(c, mid=2)
    stats: Counter[str] = Counter()
    r = Reassembler(stats, timeout=10.0)
    feed(r, c, first[0])
    assert feed(r, c, second[0], 1.0) is None               # a new Message ID: the old partial goes
    assert stats["fragment_dropped_superseded"] == 1
    result = [feed(r, c, d, 2.0) for d in second[1:]][-1]
    assert result is not None and result.payloads() == payloads2
    # timeout
    feed(r, c, first[0], 100.0)
    assert r.deadline == 110.0
    r.expire(110.0)
    assert stats["fragment_reassembly_timeout"] == 1 and r.held_bytes == 0
    # requests and responses are held apart
    resp, _ = frags(c, mid=5, response=True)
    feed(r, c, first[0], 200.0)
    feed(r, c, resp[0], 200.0)
    assert stats["fragment_dropped_superseded"] == 1
    # the sender re-cut smaller (more fragments): start over; a fragment with fewer total is stale
    stats.clear()
    r = Reassembler(stats)
    coarse, payloads = frags(c, mid=7, limit=400)
    fine, _ = frags(c, mid=7, limit=200, payloads=payloads)
    assert len(fine) > len(coarse)
    feed(r, c, coarse[0])
    feed(r, c, fine[0])
    assert stats["fragment_dropped_resized"] == 1
    assert feed(r, c, coarse[1]) is None and stats["fragment_dropped_fewer_total"] == 1
    result = [feed(r, c, d) for d in fine[1:]][-1]
    assert result is not None and result.payloads() == payloads


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_reassembler_any_order_duplicates_and_forgeries(data) -> None:
    """Whatever the order, however many duplicates or forged copies: exactly one whole message, equal to
    what was sent, and it appears when the last distinct fragment arrives."""
    c = cipher()
    out, payloads = frags(c, size=data.draw(st.integers(200, 1500)))
    order = list(data.draw(st.permutations(range(len(out)))))
    order += data.draw(st.lists(st.integers(0, len(out) - 1), max_size=len(out)))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    rng.shuffle(order)
    stats: Counter[str] = Counter()
    r = Reassembler(stats)
    seen: set[int] = set()
    wholes = 0
    for i in order:
        if data.draw(st.booleans()):                # a forged copy first: never kept, never harmful
            bad = bytearray(out[i])
            bad[rng.randrange(28, len(bad))] ^= 1 << rng.randrange(8)
            try:
                assert feed(r, c, bytes(bad)) is None
            except (CryptoError, ValueError):
                pass
        got = feed(r, c, out[i])
        if i not in seen:
            seen.add(i)
        if got is not None:
            wholes += 1
            assert len(seen) == len(out) and got.payloads() == payloads
            seen.clear()
    assert wholes >= 1


# -- configuration ----------------------------------------------------------------------------------

def test_config_values_and_errors() -> None:
    base = p256()
    for bad, what in [({"fragmentation": "maybe"}, "fragmentation"), ({"fragment_size": 279}, "fragment_size"),
                      ({"fragment_size": 70000}, "fragment_size")]:
        with pytest.raises(ValueError, match=what):
            base.config("gw-a", "gw-b", initiator=True, **bad)
    yaml = """
connections:
  a:
    local_addrs: 192.0.2.1
    remote_addrs: 192.0.2.2
    %s
    local: {auth: psk, id: a.example}
    remote: {auth: psk, id: b.example}
    children:
      net: {local_ts: 10.1.0.0/16, remote_ts: 10.2.0.0/16}
secrets:
  ike-a: {id: [a.example, b.example], secret: 0x0123456789abcdef0123456789abcdef}
"""
    conn = parse_config(yaml % "fragmentation: accept\n    fragment_size: 576", "f.yaml").connections["a"]
    ike = conn.ike_config(parse_config(yaml % "", "f.yaml").gateway)
    assert (ike.fragmentation, ike.fragment_size) == ("accept", 576)
    for text, want in [("fragmentation: no", "no"), ("fragmentation: yes", "yes"), ("", "yes")]:
        assert parse_config(yaml % text, "f.yaml").connections["a"].fragmentation == want
    for text, msg in [("fragmentation: sometimes", "f.yaml:6: connections.a.fragmentation: expected one of yes, "
                       "accept, force, no, got 'sometimes'"),
                      ("fragment_size: 100", "f.yaml:6: connections.a.fragment_size: expected 0 (576 bytes over "
                       "IPv4, 1280 over IPv6) or an IP datagram size from 280 to 65535 bytes, got 100")]:
        with pytest.raises(ConfigError) as exc:
            parse_config(yaml % text, "f.yaml")
        assert msg in exc.value.problems


def test_ike_rekey_keeps_fragmentation() -> None:
    link = Link(*p256().pair(fragment_size=300)).run()
    link.assert_up()
    (ev,) = link.of("i", IkeSaEstablished)
    assert ev and link.i.peer_fragmentation
    new = IkeSA.from_rekey(link.i, initiator=True, spi_i=os.urandom(8), spi_r=os.urandom(8), suite=link.i.suite,
                            keys=link.i.keys, nonce_i=os.urandom(32), nonce_r=os.urandom(32), now=link.now)
    assert new.peer_fragmentation


def test_error_notify_stays_whole() -> None:
    """Small protected messages (an INFORMATIONAL with one notify) go out whole even when negotiated."""
    link = Link(*p256().pair(fragment_size=280)).run()
    link.assert_up()
    frames = link.i.encode_frames(ExchangeType.INFORMATIONAL, 5, False, [NotifyPayload(Notify.INVALID_SYNTAX)])
    assert isinstance(frames, bytes)
