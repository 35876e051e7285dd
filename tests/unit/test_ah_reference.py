"""AH (RFC 4302) in every engine that has it (the reference and the C engines) against scapy's AH, and
AES-GMAC (RFC 4543) against an ICV the test computes itself with cryptography's AES-GCM."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    HBHOptUnknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import IPSecIntegrityError
from support.ah import GMACS, HMACS, arrived, gmac_icv, make_ah_sa, scapy_ah_sa
from support.engines import AH_ENGINES, install, new_engine, run

from cdefs.sa import Mode, SAError
from fastpath.iphdr import fix_ipv4_checksum
from fastpath.status import Status

MODES = (Mode.TUNNEL, Mode.TRANSPORT)


def _inner(sa, payload: bytes = b"authenticated, not secret", **ip):
    """The packet to protect: for transport mode it travels between the SA's own addresses."""
    v4 = sa.src.version == 4
    if sa.mode is Mode.TRANSPORT:
        src, dst = str(sa.src), str(sa.dst)
    else:
        src, dst = ("10.1.0.1", "10.2.0.2") if v4 else ("fd00:1::1", "fd00:2::2")
    return (IP(src=src, dst=dst, **ip) if v4 else IPv6(src=src, dst=dst, **ip)) / UDP(sport=4000, dport=53) / payload


@pytest.fixture(params=AH_ENGINES)
def engine(request) -> str:
    """Each engine with AH in turn."""
    return request.param


def _pair(sa, engine: str):
    e = new_engine(engine)
    install(e, 0, sa, "out")
    install(e, 1, sa, "in")
    return e


def _ip(raw: bytes):
    return (IP if raw[0] >> 4 == 4 else IPv6)(raw)


def _set_v4(raw: bytes, **fields: int) -> bytes:
    """Rewrite IPv4 header bytes as a router may (offset -> value) and fix the checksum as it would."""
    b = bytearray(raw)
    for off, value in fields.items():
        b[int(off[1:])] = value
    fix_ipv4_checksum(b)
    return bytes(b)


@pytest.mark.parametrize("family", (4, 6))
@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("integ", HMACS)
def test_scapy_both_ways(integ, mode, family, engine):
    sa = make_ah_sa(integ, family=family, mode=mode)
    e = _pair(sa, engine)
    plain = bytes(_inner(sa))
    ssa = scapy_ah_sa(sa)

    st, ours, _ = run(e, "out", [plain])[0]
    assert st == Status.OK
    assert ours[9 if family == 4 else 6] == 51
    ah_off = 20 if family == 4 else 40
    assert ((ours[ah_off + 1] + 2) * 4) % (4 if family == 4 else 8) == 0
    assert bytes(ssa.decrypt(_ip(ours))) == plain           # scapy verifies the ICV or raises

    theirs = bytes(ssa.encrypt(_ip(plain)))
    st, back, index = run(e, "in", [theirs])[0]
    assert (st, index) == (Status.OK, 1)
    assert back == bytes(ssa.decrypt(_ip(theirs))) == plain
    assert e.stats(1).packets == 1 and e.stats(0).packets == 1


@pytest.mark.parametrize("family", (4, 6))
@pytest.mark.parametrize("integ", ("hmac-sha1-96", "hmac-sha512-256"))
def test_esn_high_half_is_authenticated(integ, family, engine):
    seq = (5 << 32) + 0xFFFFFFF0
    sa = make_ah_sa(integ, family=family, esn=True, seq=seq)
    e = _pair(sa, engine)
    plain = bytes(_inner(sa))
    st, ours, _ = run(e, "out", [plain])[0]
    assert st == Status.OK
    assert bytes(scapy_ah_sa(sa, seq=seq).decrypt(_ip(ours))) == plain
    # Same low half, wrong high half: scapy's ICV does not verify.
    with pytest.raises(IPSecIntegrityError):
        scapy_ah_sa(sa, seq=seq + (1 << 32)).decrypt(_ip(ours))

    theirs = bytes(scapy_ah_sa(sa, seq=seq + 1).encrypt(_ip(plain)))
    assert run(e, "in", [theirs])[0][:2] == (Status.OK, plain)
    assert e.stats(1).seq == seq + 1


def _v4_with_options(sa):
    # Record Route is mutable (zeroed whole), Router Alert immutable (RFC 4302 appendix A.1).
    return bytes(_inner(sa, options=[IPOption_RR(routers=["192.0.2.77"]), IPOption_Router_Alert()]))


def test_ipv4_options_mutable_fields_changed_enarrived(engine):
    sa = make_ah_sa("hmac-sha256-128", mode=Mode.TRANSPORT)
    e = _pair(sa, engine)
    plain = _v4_with_options(sa)
    ours = run(e, "out", [plain])[0][1]
    theirs = bytes(scapy_ah_sa(sa).encrypt(_ip(plain)))
    rr = 20 + 3   # the first Record Route address
    for pkt in (ours, theirs):
        # TOS, DF, TTL and a Record Route entry change on the way; the checksum follows.
        moved = bytearray(_set_v4(pkt, b1=0xB8, b6=0x40, b8=3))
        moved[rr:rr + 4] = bytes((203, 0, 113, 9))
        fix_ipv4_checksum(moved)
        moved = bytes(moved)
        st, out, _ = run(_pair(sa, engine), "in", [moved])[0]
        assert st == Status.OK
        assert out == bytes(scapy_ah_sa(sa).decrypt(_ip(moved)))
        assert out[32:] == plain[32:] and out[8] == 3


@pytest.mark.parametrize("where", ("router-alert", "source", "payload", "ah-next-header"))
def test_ipv4_immutable_byte_changed_fails(where, engine):
    sa = make_ah_sa("hmac-sha384-192", mode=Mode.TRANSPORT)
    e = _pair(sa, engine)
    pkt = bytearray(bytes(scapy_ah_sa(sa).encrypt(_ip(_v4_with_options(sa)))))
    ihl = (pkt[0] & 15) * 4
    off = {"router-alert": 20 + 7 + 3, "source": 15, "payload": len(pkt) - 1, "ah-next-header": ihl}[where]
    pkt[off] ^= 0x01
    fix_ipv4_checksum(pkt)
    assert run(e, "in", [bytes(pkt)])[0][0] == Status.AUTH_FAILED
    assert e.stats(1).drops == {Status.AUTH_FAILED: 1}
    assert e.stats(1).packets == 0


HOP = "2001:db8:aaaa::1"


def _v6_with_ext(sa):
    """Hop-by-Hop and Destination Options with a change-en-route (0x3e) and a fixed (0x1e) option, and a
    routing header with one hop still to go: the packet as its source sends it."""
    hbh = IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"mutable!"),
                                      HBHOptUnknown(otype=0x1E, optdata=b"fixed")])
    dst = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3E, optdata=b"mut")])
    rt = IPv6ExtHdrRouting(addresses=["2001:db8:bbbb::2", str(sa.dst)], segleft=2)
    return bytes(IPv6(src=str(sa.src), dst=HOP, tc=0x28, fl=0x12345) / hbh / dst / rt
                 / UDP(sport=1, dport=2) / b"v6 with extension headers")


def _opt_data_offset(pkt: bytes, otype: int, start: int = 40) -> int:
    """Offset of the data of the first option ``otype`` in the extension headers."""
    i = pkt.index(bytes((otype,)), start + 2)
    return i + 2


def test_ipv6_extension_headers_mutable_changed_enarrived(engine):
    sa = make_ah_sa("hmac-sha256-128", family=6, mode=Mode.TRANSPORT)
    e = _pair(sa, engine)
    plain = _v6_with_ext(sa)
    st, ours, _ = run(e, "out", [plain])[0]
    assert st == Status.OK
    # scapy authenticates a routing header as if every segment were left, which this one has.
    theirs = bytes(scapy_ah_sa(sa).encrypt(_ip(plain)))
    for pkt in (arrived(ours), arrived(theirs)):
        assert _ip(pkt).dst == sa.dst.compressed
        moved = bytearray(pkt)
        moved[0:4] = struct.pack("!I", (6 << 28) | (0xB8 << 20) | 0xABCDE)   # traffic class, flow label
        moved[7] = 1                                                        # hop limit
        d = _opt_data_offset(pkt, 0x3E)
        moved[d:d + 8] = b"CHANGED!"                                        # a change-en-route option
        moved = bytes(moved)
        st, out, _ = run(_pair(sa, engine), "in", [moved])[0]
        assert st == Status.OK
        assert out == bytes(scapy_ah_sa(sa).decrypt(_ip(moved)))
        assert out[-25:] == b"v6 with extension headers"

        bad = bytearray(pkt)
        d = _opt_data_offset(pkt, 0x1E)
        bad[d] ^= 0x80                                                      # an immutable option
        assert run(_pair(sa, engine), "in", [bytes(bad)])[0][0] == Status.AUTH_FAILED
    # As sent (segments left), the ICV does not match: the receiver authenticates the arrived header.
    assert run(_pair(sa, engine), "in", [ours])[0][0] == Status.AUTH_FAILED


def test_tunnel_outer_mutable_fields_changed(engine):
    sa = make_ah_sa("hmac-sha1-96", mode=Mode.TUNNEL)
    e = _pair(sa, engine)
    plain = bytes(_inner(sa))
    ours = run(e, "out", [plain])[0][1]
    moved = _set_v4(ours, b1=0xB8, b6=0x40, b8=7)
    scapy_ah_sa(sa).decrypt(_ip(moved))
    assert run(e, "in", [moved])[0][:2] == (Status.OK, plain)
    assert run(_pair(sa, engine), "in", [_set_v4(ours, b16=1)])[0][0] == Status.AUTH_FAILED   # outer destination


def test_replay_and_icv_before_replay_state(engine):
    sa = make_ah_sa("hmac-sha256-128", replay_window=32)
    e = _pair(sa, engine)
    ssa = scapy_ah_sa(sa)
    plain = bytes(_inner(sa))
    p1 = bytes(ssa.encrypt(_ip(plain), seq_num=1))
    # A forgery far ahead must not move the window: the real packet 2 still goes through after it.
    forged = bytearray(bytes(ssa.encrypt(_ip(plain), seq_num=1000)))
    forged[-1] ^= 1
    p2 = bytes(ssa.encrypt(_ip(plain), seq_num=2))
    got = [s for s, _, _ in run(e, "in", [p1, bytes(forged), p2, p1])]
    assert got == [Status.OK, Status.AUTH_FAILED, Status.OK, Status.REPLAY]
    assert e.stats(1).seq == 2
    assert e.stats(1).drops == {Status.AUTH_FAILED: 1, Status.REPLAY: 1}


def test_unknown_spi_and_esp_sa_with_the_same_spi(engine):
    sa = make_ah_sa("hmac-sha256-128")
    e = new_engine(engine)
    install(e, 1, sa, "in")
    other = scapy_ah_sa(make_ah_sa("hmac-sha256-128", spi=sa.spi ^ 0xFF))
    st, _, index = run(e, "in", [bytes(other.encrypt(_ip(bytes(_inner(sa)))))])[0]
    assert st == Status.NO_SA and index == 0xFFFFFFFF
    assert e.engine_drops() == {Status.NO_SA: 1}


def test_transport_fragments_are_not_protected(engine):
    """RFC 4302 3.3.4: AH covers whole packets; a fragment's ICV could never be verified."""
    from scapy.layers.inet6 import IPv6ExtHdrFragment

    e = new_engine(engine)
    v4, v6 = make_ah_sa(mode=Mode.TRANSPORT), make_ah_sa(family=6, mode=Mode.TRANSPORT)
    install(e, 0, v4, "out")
    install(e, 1, v6, "out")
    frag4 = bytes(IP(src=str(v4.src), dst=str(v4.dst), flags="MF") / UDP() / (b"x" * 16))
    frag6 = bytes(IPv6(src=str(v6.src), dst=str(v6.dst)) / IPv6ExtHdrFragment(m=1) / UDP() / (b"x" * 16))
    assert [s for s, _, _ in run(e, "out", [frag4, frag6], sa=[0, 1])] == [Status.FRAGMENT] * 2
    assert e.stats(0).seq == 1 and e.stats(1).seq == 1     # no sequence number spent


def test_malformed_length_and_truncation(engine):
    sa = make_ah_sa("hmac-sha256-128", family=6)
    e = _pair(sa, engine)
    good = run(e, "out", [bytes(_inner(sa))])[0][1]
    wrong_len = bytearray(good)
    wrong_len[41] -= 1        # ICV field without IPv6's 8-byte alignment padding
    assert run(e, "in", [bytes(wrong_len)])[0][0] == Status.MALFORMED
    short = bytearray(good[:40 + 8])
    short[4:6] = struct.pack("!H", 8)
    assert run(e, "in", [bytes(short)])[0][0] == Status.MALFORMED


@pytest.mark.parametrize("family", (4, 6))
@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("integ", GMACS)
def test_gmac_against_independent_aes_gcm(integ, mode, family, engine):
    sa = make_ah_sa(integ, family=family, mode=mode)
    e = _pair(sa, engine)
    plain = bytes(_inner(sa))
    st, ours, _ = run(e, "out", [plain])[0]
    assert st == Status.OK
    ah = 20 if family == 4 else 40
    field = ours[ah + 12:ah + 12 + 24]
    assert field[:8] == struct.pack("!Q", 1)                 # the IV: the sequence number
    assert field == gmac_icv(sa, ours, seq=1)
    # IPv4: 12 + 8 + 16 = 36 bytes, aligned; IPv6 pads 4 (RFC 4543 erratum 3643).
    assert (ours[ah + 1] + 2) * 4 == (36 if family == 4 else 40)

    # A packet the test builds and signs itself, with an IV of its own choosing, verifies.
    theirs = bytearray(ours)
    theirs[ah + 8:ah + 12] = struct.pack("!I", 7)
    theirs[ah + 12:ah + 20] = bytes.fromhex("0123456789abcdef")
    theirs[ah + 20:ah + 36] = gmac_icv(sa, bytes(theirs), seq=7)[8:]
    st, back, _ = run(e, "in", [bytes(theirs)])[0]
    assert (st, back) == (Status.OK, plain)
    theirs[ah + 12] ^= 1                                      # the IV is authenticated through the nonce
    theirs[ah + 8:ah + 12] = struct.pack("!I", 8)
    assert run(e, "in", [bytes(theirs)])[0][0] == Status.AUTH_FAILED


def test_gmac_esn(engine):
    seq = (3 << 32) + 5
    sa = make_ah_sa("aes-gmac-256", esn=True, seq=seq)
    e = _pair(sa, engine)
    ours = run(e, "out", [bytes(_inner(sa))])[0][1]
    assert ours[32:56] == gmac_icv(sa, ours, seq=seq)
    assert ours[32:56] != gmac_icv(sa, ours, seq=seq & 0xFFFFFFFF)
    assert run(e, "in", [ours])[0][0] == Status.OK


def test_sa_model_rejects_what_ah_cannot_do():
    with pytest.raises(SAError, match="udp_encap"):
        make_ah_sa(udp_encap=True)
    with pytest.raises(SAError, match=r"integrity_key: expected 20 bytes for aes-gmac-128 \(AES key \+ 4-byte salt"):
        make_ah_sa("aes-gmac-128", integ_key=bytes(16))
    with pytest.raises(SAError, match="integrity"):
        make_ah_sa("aes-cbc-128", integ_key=b"")


@pytest.mark.parametrize("family", (4, 6))
@pytest.mark.parametrize("integ", ("hmac-sha256-128", "aes-gmac-128"))
def test_every_immutable_bit_is_authenticated(integ, family, engine):
    """Flip one bit in each byte of a tunnel-mode packet: only the outer header's mutable fields may still
    verify (and do not fail the ICV), and nothing, whatever the byte, ends in an internal error."""
    sa = make_ah_sa(integ, family=family, replay_window=0)
    e = _pair(sa, engine)
    plain = bytes(_inner(sa))
    good = run(e, "out", [plain])[0][1]
    mutable = {1, 6, 7, 8, 10, 11} if family == 4 else {0, 1, 2, 3, 7}
    flipped = []
    for off in range(len(good)):
        b = bytearray(good)
        b[off] ^= 0x01
        flipped.append(bytes(b))
    results = run(e, "in", flipped)
    for off, (st, _, _) in enumerate(results):
        assert st != Status.INTERNAL, off
        if off in mutable:
            assert st != Status.AUTH_FAILED, off
        else:
            assert st != Status.OK, off     # IPv6: the ICV's alignment padding included
