"""AH in the C engines (cdefs/esp/ah_core.c) beside the reference (fastpath/ah_ref.py) as a second oracle:
the same SAs give byte-identical packets and the same verdicts, and one batch mixing ESP and AH SAs, good
and bad packets gets each packet's status, SA and counters right."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from support.ah import GMACS, HMACS, arrived, gmac_icv, make_ah_sa, scapy_ah_sa
from support.engines import AH_ENGINES, install, new_engine, run
from support.sa import make_sa, scapy_sa

from cdefs.sa import Mode
from fastpath.status import Status

C_ENGINES = [n for n in AH_ENGINES if n != "reference"]
NO_INDEX = 0xFFFFFFFF


def _plain(sa, options: bool) -> bytes:
    """A packet for sa; ``options``: IPv4 options (mutable and immutable) or IPv6 extension headers."""
    v4 = sa.src.version == 4
    if sa.mode is Mode.TRANSPORT:
        src, dst = str(sa.src), str(sa.dst)
    else:
        src, dst = ("10.1.0.1", "10.2.0.2") if v4 else ("fd00:1::1", "fd00:2::2")
    tail = UDP(sport=4000, dport=53) / (b"payload " * 5)
    if v4:
        opts = [IPOption_RR(routers=["192.0.2.77"]), IPOption_Router_Alert()] if options else []
        return bytes(IP(src=src, dst=dst, tos=0x2A, options=opts) / tail)
    if not options:
        return bytes(IPv6(src=src, dst=dst, tc=0x28, fl=0x12345) / tail)
    hbh = IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"mutable!"),
                                      HBHOptUnknown(otype=0x1E, optdata=b"fixed")])
    rt = IPv6ExtHdrRouting(addresses=["2001:db8:bbbb::2", dst], segleft=2)
    dopt = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3E, optdata=b"mut")])
    return bytes(IPv6(src=src, dst="2001:db8:aaaa::1", tc=0x28, fl=0x12345) / hbh / dopt / rt / dopt / tail)


def _engines(sa, c_name: str):
    """(reference, C engine), each with sa outbound at 0 and inbound at 1."""
    out = []
    for name in ("reference", c_name):
        e = new_engine(name)
        install(e, 0, sa, "out")
        install(e, 1, sa, "in")
        out.append(e)
    return out


CASES = [(integ, mode, family, esn) for integ in HMACS + GMACS for mode in (Mode.TUNNEL, Mode.TRANSPORT)
         for family in (4, 6) for esn in (False, True)]


@pytest.mark.parametrize("c_name", C_ENGINES)
@pytest.mark.parametrize(("integ", "mode", "family", "esn"), CASES,
                         ids=[f"{i}-{m}-{f}-{'esn' if e else 'seq32'}" for i, m, f, e in CASES])
def test_c_output_byte_identical_to_reference(c_name, integ, mode, family, esn):
    seq = (7 << 32) + 0xFFFFFFFE if esn else 1     # ESN: across the epoch within the batch
    sa = make_ah_sa(integ, family=family, mode=mode, esn=esn, seq=seq)
    ref, c = _engines(sa, c_name)
    plains = [_plain(sa, options=i % 2 == 1) for i in range(4)]
    ours = run(c, "out", plains)
    want = run(ref, "out", plains)
    assert [s for s, _, _ in ours] == [Status.OK] * 4
    assert [p for _, p, _ in ours] == [p for _, p, _ in want]
    assert c.stats(0) == ref.stats(0)
    if integ in GMACS:      # the even packets: no options or extension headers, which gmac_icv leaves out
        ah = 20 if family == 4 else 40
        assert [p[ah + 12:ah + 36] for _, p, _ in ours[::2]] == \
            [gmac_icv(sa, p, seq=seq + 2 * k) for k, (_, p, _) in enumerate(ours[::2])]
    # Inbound, in both: every packet once, then all of them again (replays).
    routed = family == 6 and mode is Mode.TRANSPORT     # the routing header travels outside AH
    wire = [arrived(p) if routed else p for _, p, _ in want]
    got, exp = run(c, "in", wire + wire), run(ref, "in", wire + wire)
    assert got == exp
    assert [s for s, _, _ in got] == [Status.OK] * 4 + [Status.REPLAY] * 4
    assert [p for _, p, _ in got[:4]] == [arrived(p) if routed else p for p in plains]
    assert c.stats(1) == ref.stats(1)


@pytest.mark.parametrize("c_name", C_ENGINES)
@pytest.mark.parametrize(("integ", "family", "mode"), [("hmac-sha256-128", 4, Mode.TRANSPORT),
                                                       ("aes-gmac-192", 6, Mode.TUNNEL),
                                                       ("hmac-sha1-96", 6, Mode.TRANSPORT)])
def test_every_byte_flipped_same_verdict_as_reference(c_name, integ, family, mode):
    """Each byte of a protected packet (options / extension headers included) flipped in turn: the C engine
    says what the reference says, packet by packet, and writes the same bytes when it accepts."""
    sa = make_ah_sa(integ, family=family, mode=mode, replay_window=0)
    ref, c = _engines(sa, c_name)
    good = run(ref, "out", [_plain(sa, options=True)])[0][1]
    good = arrived(good) if family == 6 else good
    flipped = []
    for off in range(len(good)):
        b = bytearray(good)
        b[off] ^= 0x01
        flipped.append(bytes(b))
    got, exp = run(c, "in", flipped), run(ref, "in", flipped)
    for off, (g, x) in enumerate(zip(got, exp, strict=True)):
        assert g[0] != Status.INTERNAL, off
        assert (g[0], g[2]) == (x[0], x[2]), off
        if g[0] == Status.OK:
            assert g[1] == x[1], off
    assert c.stats(1) == ref.stats(1) and c.engine_drops() == ref.engine_drops()


def _ip(raw: bytes):
    return (IP if raw[0] >> 4 == 4 else IPv6)(raw)


@pytest.mark.parametrize("name", AH_ENGINES)
def test_mixed_batch_inbound_each_status_right(name):
    """ESP and AH SAs in one engine, an AH SA sharing the ESP SA's SPI; one batch of good, tampered,
    replayed, unknown, clear and broken packets."""
    esp = make_sa("aes-gcm-128", spi=0x5000)
    ah4 = make_ah_sa("hmac-sha256-128", spi=0x5000)                       # same SPI as the ESP SA
    ah6 = make_ah_sa("aes-gmac-128", family=6, mode=Mode.TRANSPORT, spi=0x6000)
    e = new_engine(name)
    for i, sa in enumerate((esp, ah4, ah6)):
        install(e, i, sa, "in")
    send6 = new_engine("reference")
    install(send6, 0, ah6, "out")

    inner = bytes(IP(src="10.1.0.1", dst="10.2.0.2") / UDP(sport=1, dport=2) / b"inner")
    p6 = bytes(IPv6(src=str(ah6.src), dst=str(ah6.dst)) / UDP(sport=3, dport=4) / b"transport v6")
    s_esp, s_ah = scapy_sa(esp), scapy_ah_sa(ah4)
    e1, e2 = (bytes(s_esp.encrypt(IP(inner), seq_num=n)) for n in (1, 2))
    a1, a2, a3 = (bytes(s_ah.encrypt(IP(inner), seq_num=n)) for n in (1, 2, 3))
    g1, g2 = (p for _, p, _ in run(send6, "out", [p6, p6]))
    tampered = bytearray(a2)
    tampered[-1] ^= 1
    stranger = bytes(scapy_ah_sa(make_ah_sa("hmac-sha256-128", spi=0x7777)).encrypt(IP(inner)))
    clear = bytes(IP(src="10.9.9.9", dst="10.8.8.8") / UDP() / b"clear")
    short = bytearray(a1[:20 + 8])
    short[2:4] = struct.pack("!H", 28)
    bad_len = bytearray(g1)
    bad_len[41] -= 1                  # the ICV field without IPv6's alignment padding
    batch = [a1, e1, bytes(tampered), g1, a2, a1, stranger, clear, bytes(short), e2, bytes(bad_len), g2, a3]
    want = [(Status.OK, 1), (Status.OK, 0), (Status.AUTH_FAILED, 1), (Status.OK, 2), (Status.OK, 1),
            (Status.REPLAY, 1), (Status.NO_SA, NO_INDEX), (Status.NOT_ESP, NO_INDEX), (Status.MALFORMED, NO_INDEX),
            (Status.OK, 0), (Status.MALFORMED, 2), (Status.OK, 2), (Status.OK, 1)]
    got = run(e, "in", batch)
    assert [(s, i) for s, _, i in got] == want
    assert [got[i][1] for i in (0, 1, 4, 9, 12)] == [inner] * 5
    assert got[3][1] == got[11][1] == p6
    assert e.stats(0).packets == 2 and e.stats(0).drops == {}
    assert (e.stats(1).packets, e.stats(1).drops) == (3, {Status.AUTH_FAILED: 1, Status.REPLAY: 1})
    assert (e.stats(2).packets, e.stats(2).drops) == (2, {Status.MALFORMED: 1})
    assert e.engine_drops() == {Status.NO_SA: 1, Status.NOT_ESP: 1, Status.MALFORMED: 1}


@pytest.mark.parametrize("name", AH_ENGINES)
def test_mixed_batch_outbound_each_sa_its_protocol(name):
    esp = make_sa("aes-cbc-128", "hmac-sha256-128", mode=Mode.TUNNEL)
    ah4 = make_ah_sa("hmac-sha512-256")
    ah6 = make_ah_sa("aes-gmac-256", family=6, mode=Mode.TRANSPORT)
    e = new_engine(name)
    for i, sa in enumerate((esp, ah4, ah6)):
        install(e, i, sa, "out")
    inner = bytes(IP(src="10.1.0.1", dst="10.2.0.2") / UDP(sport=1, dport=2) / b"inner")
    p6 = bytes(IPv6(src=str(ah6.src), dst=str(ah6.dst)) / UDP(sport=3, dport=4) / b"transport v6")
    got = run(e, "out", [inner, inner, p6, inner, inner, p6], sa=[1, 0, 2, 9, 1, 2])
    assert [s for s, _, _ in got] == [Status.OK, Status.OK, Status.OK, Status.NO_SA, Status.OK, Status.OK]
    assert [p[9 if p[0] >> 4 == 4 else 6] for i, (_, p, _) in enumerate(got) if i != 3] == [51, 50, 51, 51, 51]
    assert bytes(scapy_sa(esp).decrypt(IP(got[1][1]))) == inner
    for n, k in enumerate((0, 4)):
        assert bytes(scapy_ah_sa(ah4, seq=n + 1).decrypt(_ip(got[k][1]))) == inner
    check = new_engine("reference")
    install(check, 0, ah6, "in")
    assert [(s, p) for s, p, _ in run(check, "in", [got[2][1], got[5][1]])] == [(Status.OK, p6)] * 2
    assert [e.stats(i).seq for i in range(3)] == [2, 3, 3]
    assert e.engine_drops() == {Status.NO_SA: 1}


@pytest.mark.parametrize("c_name", C_ENGINES)
@pytest.mark.parametrize("with_esp", (False, True), ids=("ah-only", "beside-esp"))
@pytest.mark.parametrize("integ", ("hmac-sha256-128", "aes-gmac-128"))
def test_rounds_reordered_esn_same_verdicts_as_reference(c_name, with_esp, integ):
    """More packets than one C round, ESN across an epoch, reordered (a fixed permutation) and duplicated:
    the window moves inside a round and the high half of a later packet depends on an earlier one's
    verdict, so the C engine must end rounds where the reference, one packet at a time, would differ."""
    seq = (9 << 32) + 0xFFFFFFF0
    sa = make_ah_sa(integ, esn=True, seq=seq, replay_window=64)
    ref, c = _engines(sa, c_name)
    if with_esp:
        install(c, 2, make_sa("aes-gcm-128", spi=sa.spi), "in")     # the mixed entry point, same SPI
        install(ref, 2, make_sa("aes-gcm-128", spi=sa.spi), "in")
    wire = [p for _, p, _ in run(ref, "out", [_plain(sa, options=False)] * 120)]
    order = [(k * 37) % 120 for k in range(120)]       # 37 is coprime to 120: a permutation
    # Jumps of several windows ahead and back, then duplicates of packets on both sides of the epoch.
    batch = [wire[i] for i in order] + [wire[i] for i in (5, 20, 119, 0, 64, 65)]
    got, exp = run(c, "in", batch), run(ref, "in", batch)
    assert [(s, i) for s, _, i in got] == [(s, i) for s, _, i in exp]
    assert [p for s, p, _ in got if s == Status.OK] == [p for s, p, _ in exp if s == Status.OK]
    assert {s for s, _, _ in got} >= {Status.OK, Status.REPLAY}
    assert c.stats(1) == ref.stats(1) and c.engine_drops() == ref.engine_drops()


@pytest.mark.parametrize("name", AH_ENGINES)
@pytest.mark.parametrize("mode", (Mode.TUNNEL, Mode.TRANSPORT), ids=str)
def test_ipv4_ah_never_leaves_with_id_zero(name, mode):
    # Linux's raw send (IP_HDRINCL) replaces an IPv4 ID of 0 after the ICV covered it, and the ID is
    # immutable for AH: the first packet of a tunnel SA must not carry the counter's 0, and a transport
    # packet whose own ID is 0 takes the SA's next one (RFC 6864 4.1).  Found by tests/e2e/test_gateway_ah.py.
    sa = make_ah_sa("hmac-sha256-128", family=4, mode=mode)
    e, ref = new_engine(name), new_engine("reference")
    for x in (e, ref):
        install(x, 0, sa, "out")
    src, dst = (str(sa.src), str(sa.dst)) if mode is Mode.TRANSPORT else ("10.1.0.1", "10.2.0.2")
    plains = [bytes(IP(src=src, dst=dst, id=i, flags="DF") / UDP(sport=1, dport=2) / b"id") for i in (0, 0, 5)]
    got = run(e, "out", plains)
    assert got == run(ref, "out", plains)
    ids = [IP(p).id for _, p, _ in got]
    assert [s for s, _, _ in got] == [Status.OK] * 3
    assert ids == ([1, 2, 3] if mode is Mode.TUNNEL else [1, 2, 5])
    ssa = scapy_ah_sa(sa)
    for (_, p, _), plain, pid in zip(got, plains, ids, strict=True):
        want = IP(plain)
        if mode is Mode.TRANSPORT:
            want.id, want.chksum = pid, None
        assert bytes(ssa.decrypt(IP(p))) == bytes(want)
