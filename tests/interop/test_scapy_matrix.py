"""Cross-check every engine against scapy's independent ESP implementation.

For each algorithm, every cell of mode (tunnel 4-in-4, 6-in-6, 4-in-6, 6-in-4;
transport v4, v6) x ESN off/on x UDP encapsulation off/on gets its own SA pair
in one engine, and all cells go through the engine in one batch per step:

* outbound: scapy decrypts our packets to the original inner packet, and
  scapy encrypting the same packet with the same sequence number and IV gives
  byte-identical ESP (padding, trailer, IV choice and ICV per docs/esp.md);
  the outer header follows docs/esp.md step 7.
* inbound: packets scapy encrypts (random IVs) decapsulate to the original,
  and tampered, replayed, truncated and unknown-SPI packets are dropped and
  counted under the right status.

ESN cells cross 2^32 so the high half changes inside the batch.  scapy has no
notion of a 64-bit sequence number: it is given the high half per packet
(``esn``) and the low half as ``seq_num``.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest
from support.engines import ALGORITHMS, alg_id, install, new_engine, run
from support.packets import inner_packet, outer_esp
from support.sa import endpoints, make_sa, scapy_sa

from cdefs.sa import SA
from fastpath.status import Status

scapy_ipsec = pytest.importorskip("scapy.layers.ipsec")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402

ESP = scapy_ipsec.ESP
SecurityAssociation = scapy_ipsec.SecurityAssociation

SHAPES = [("tunnel", 4, 4), ("tunnel", 6, 6), ("tunnel", 4, 6), ("tunnel", 6, 4),
          ("transport", 4, 4), ("transport", 6, 6)]
CELLS = [(shape, esn, udp) for shape in SHAPES for esn in (False, True) for udp in (False, True)]

PAYLOADS = [b"", bytes(range(37)), bytes(range(256)) * 3 + b"tail"]
TOS = [0x00, 0xB8 | 0x02, 0x01]        # DSCP EF with ECT(0), ECT(1): outer copies them (normal ECN)
FLOW = 0x5A5A5
SEQ_OUT = {False: 2**32 - len(PAYLOADS), True: 2**32 - 2}   # ends at the last 32-bit number / crosses 2^32
SEQ_IN = {False: [1, 3, 2], True: [2**32 - 200, 2**32 - 1, 2**32 + 1]}
SEQ_EXTRA = {False: [1000, 1001], True: [2**32 + 2, 2**32 + 3]}


def scapy_pkt(data: bytes):
    return (IP if data[0] >> 4 == 4 else IPv6)(data)


def esp_offset(pkt: bytes, udp: bool) -> int:
    """Where ESP starts in an outer packet without IPv6 extension headers."""
    off = (pkt[0] & 0x0F) * 4 if pkt[0] >> 4 == 4 else 40
    return off + (8 if udp else 0)


def scapy_encrypt(ssa: SecurityAssociation, inner: bytes, seq: int, iv: bytes | None = None):
    # scapy treats seq_num/esn of 0 as "use the SA's", so set the SA's as well.
    ssa.seq_num, ssa.esn = seq & 0xFFFFFFFF, seq >> 32
    return ssa.encrypt(scapy_pkt(inner), seq_num=seq & 0xFFFFFFFF, iv=iv, esn=seq >> 32)


def scapy_decrypt(ssa: SecurityAssociation, outer: bytes, seq: int) -> bytes:
    ssa.esn = seq >> 32
    return bytes(ssa.decrypt(scapy_pkt(outer), esn=seq >> 32))


@dataclass
class Cell:
    name: str
    mode: str
    inner_v: int
    esn: bool
    udp: bool
    sa_out: SA
    sa_in: SA
    idx_out: int
    idx_in: int
    inners: list[bytes] = field(default_factory=list)


def build_cells(enc: str, integ: str | None, rng: random.Random) -> list[Cell]:
    cells = []
    spis = rng.sample(range(0x1000, 0xFFFF0000), 2 * len(CELLS))
    for k, ((mode, inner_v, outer_v), esn, udp) in enumerate(CELLS):
        common = dict(rng=rng, family=outer_v, mode=mode, esn=esn, udp_encap=udp, replay_window=64)
        sa_out = make_sa(enc, integ, spi=spis[2 * k], seq=SEQ_OUT[esn], **common)
        sa_in = make_sa(enc, integ, spi=spis[2 * k + 1], **common)
        name = f"{mode}-{inner_v}in{outer_v}{'-esn' if esn else ''}{'-udp' if udp else ''}"
        cell = Cell(name, mode, inner_v, esn, udp, sa_out, sa_in, 2 * k, 2 * k + 1)
        src, dst = (str(a) for a in endpoints(outer_v)) if mode == "transport" else (None, None)
        for payload, tos in zip(PAYLOADS, TOS, strict=True):
            cell.inners.append(inner_packet(inner_v, payload, src=src, dst=dst, tos=tos, flow=FLOW).data)
        cells.append(cell)
    return cells


def engine_with(engine_name: str, cells: list[Cell]):
    eng = new_engine(engine_name, capacity=2 * len(cells))
    for c in cells:
        install(eng, c.idx_out, c.sa_out, "out")
        install(eng, c.idx_in, c.sa_in, "in")
    return eng


def check_outer(c: Cell, inner: bytes, out: bytes, errors: list[str]) -> None:
    """docs/esp.md outbound step 7 for the outer header."""
    sa = c.sa_out
    proto = 17 if sa.udp_encap else 50
    if out[0] >> 4 == 4:
        hdr = IP(out)
        fields = (hdr.src, hdr.dst, hdr.proto, hdr.len, hdr.ttl)
        want = (str(sa.src), str(sa.dst), proto, len(out), sa.ttl)
        rebuilt = IP(out)
        del rebuilt.chksum
        if IP(bytes(rebuilt)).chksum != hdr.chksum:
            errors.append(f"{c.name}: bad outer IPv4 checksum")
        if c.mode == "tunnel" and not hdr.flags.DF:
            errors.append(f"{c.name}: outer DF should be copied/set (inner DF set or IPv6)")
        tos = hdr.tos
    else:
        hdr = IPv6(out)
        fields = (hdr.src, hdr.dst, hdr.nh, hdr.plen + 40, hdr.hlim)
        want = (str(sa.src), str(sa.dst), proto, len(out), sa.ttl)
        tos = hdr.tc
        if c.mode == "tunnel":
            flow = FLOW if c.inner_v == 6 else 0
            if hdr.fl != flow:
                errors.append(f"{c.name}: outer flow label {hdr.fl:#x}, expected {flow:#x}")
    if c.mode == "transport":
        want = want[:4] + (fields[4],)          # transport keeps the original TTL/hop limit
    if fields != want:
        errors.append(f"{c.name}: outer (src, dst, proto, len, ttl) {fields} != {want}")
    inner_tos = inner[1] if inner[0] >> 4 == 4 else (int.from_bytes(inner[0:2], "big") >> 4) & 0xFF
    if c.mode == "tunnel" and tos != inner_tos:
        errors.append(f"{c.name}: outer DSCP/ECN {tos:#x}, expected the inner {inner_tos:#x}")
    if sa.udp_encap:
        u = UDP(out[esp_offset(out, False):])
        if (u.sport, u.dport, u.len) != (sa.sport, sa.dport, len(out) - esp_offset(out, False)):
            errors.append(f"{c.name}: UDP header {(u.sport, u.dport, u.len)}")
        if out[0] >> 4 == 4 and u.chksum != 0:
            errors.append(f"{c.name}: IPv4 UDP checksum should be 0, got {u.chksum:#x}")
        if out[0] >> 4 == 6:
            again = IPv6(out)
            del again[UDP].chksum
            if IPv6(bytes(again))[UDP].chksum != u.chksum:
                errors.append(f"{c.name}: IPv6 UDP checksum wrong")


@pytest.mark.parametrize("alg", ALGORITHMS, ids=alg_id)
def test_outbound_matches_scapy(engine_name: str, alg: tuple[str, str | None]) -> None:
    enc, integ = alg
    cells = build_cells(enc, integ, random.Random(f"out-{enc}-{integ}"))
    eng = engine_with(engine_name, cells)
    packets, idx = [], []
    for c in cells:
        packets += c.inners
        idx += [c.idx_out] * len(c.inners)
    res = run(eng, "out", packets, idx)

    errors: list[str] = []
    k = 0
    iv_len = cells[0].sa_out.enc_alg.iv_len
    for c in cells:
        ssa = scapy_sa(c.sa_out)
        ids = []
        for j, inner in enumerate(c.inners):
            status, out, _ = res[k]
            k += 1
            seq = SEQ_OUT[c.esn] + j
            if status != Status.OK:
                errors.append(f"{c.name}[{j}]: outbound status {status.name}")
                continue
            off = esp_offset(out, c.udp)
            esp = out[off:]
            spi, seq_lo = struct.unpack("!II", esp[:8])
            if (spi, seq_lo) != (c.sa_out.spi, seq & 0xFFFFFFFF):
                errors.append(f"{c.name}[{j}]: ESP header spi/seq {spi:#x}/{seq_lo} expected seq {seq}")
                continue
            iv = esp[8:8 + iv_len]
            try:
                back = scapy_decrypt(ssa, out, seq)
            except Exception as exc:  # noqa: BLE001 - scapy raises several types
                errors.append(f"{c.name}[{j}]: scapy cannot decrypt our packet: {exc!r}")
                continue
            if back != inner:
                errors.append(f"{c.name}[{j}]: scapy decrypts to a different packet")
            ref = bytes(scapy_encrypt(ssa, inner, seq, iv=iv))
            ref_esp = ref[esp_offset(ref, c.udp):]
            if ref_esp != esp:
                errors.append(f"{c.name}[{j}]: ESP bytes differ from scapy's with the same IV "
                              f"(len {len(esp)} vs {len(ref_esp)})")
            check_outer(c, inner, out, errors)
            if out[0] >> 4 == 4 and c.mode == "tunnel":
                ids.append(IP(out).id)
        if len(ids) > 1 and any((b - a) & 0xFFFF != 1 for a, b in zip(ids, ids[1:], strict=False)):
            errors.append(f"{c.name}: outer IPv4 IDs not consecutive: {ids}")
        st = eng.stats(c.idx_out)
        if st.packets != len(c.inners) or st.bytes != sum(map(len, c.inners)):
            errors.append(f"{c.name}: stats packets/bytes {st.packets}/{st.bytes}")
        if st.seq != SEQ_OUT[c.esn] + len(c.inners):
            errors.append(f"{c.name}: stats.seq {st.seq}, expected next {SEQ_OUT[c.esn] + len(c.inners)}")
    assert not errors, f"{engine_name} {alg_id(alg)}: {len(errors)} problems:\n" + "\n".join(errors[:40])


def _flip(esp: bytes, pos: int) -> bytes:
    b = bytearray(esp)
    b[pos] ^= 0x40
    return bytes(b)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=alg_id)
def test_inbound_from_scapy(engine_name: str, alg: tuple[str, str | None]) -> None:
    enc, integ = alg
    rng = random.Random(f"in-{enc}-{integ}")
    cells = build_cells(enc, integ, rng)
    eng = engine_with(engine_name, cells)
    errors: list[str] = []

    valid, idx, extras = [], [], {}
    for c in cells:
        ssa = scapy_sa(c.sa_in)
        for inner, seq in zip(c.inners, SEQ_IN[c.esn], strict=True):
            valid.append(bytes(scapy_encrypt(ssa, inner, seq)))
            idx.append(c.idx_in)
        extras[c.name] = [bytes(scapy_encrypt(ssa, c.inners[0], s)) for s in SEQ_EXTRA[c.esn]]

    res = run(eng, "in", valid)
    k = 0
    for c in cells:
        for j, inner in enumerate(c.inners):
            status, out, sa_idx = res[k]
            k += 1
            if status != Status.OK:
                errors.append(f"{c.name}[{j}]: inbound status {status.name}")
            elif out != inner:
                errors.append(f"{c.name}[{j}]: decapsulated packet differs from the original")
            elif sa_idx != c.idx_in:
                errors.append(f"{c.name}[{j}]: batch.sa {sa_idx}, expected {c.idx_in}")
        st = eng.stats(c.idx_in)
        if (st.packets, st.bytes, st.seq) != (len(c.inners), sum(map(len, c.inners)), max(SEQ_IN[c.esn])):
            errors.append(f"{c.name}: stats packets/bytes/seq {st.packets}/{st.bytes}/{st.seq}")

    # Negative cases: every one must be dropped under its own status.
    alg_ = cells[0].sa_in.enc_alg
    icv_len = cells[0].sa_in.icv_len
    bad, expect = [], []
    unused_spi = 0x00000777
    for c in cells:
        e1, e2 = extras[c.name]
        off = esp_offset(e1, c.udp)
        src, dst = str(c.sa_in.src), str(c.sa_in.dst)
        esp1, esp2 = e1[off:], e2[off:]

        def wrap(esp: bytes, c: Cell = c, src: str = src, dst: str = dst) -> bytes:
            return outer_esp(src, dst, esp, udp_encap=c.udp)

        bad += [e1[:-1] + bytes([e1[-1] ^ 0x01]),                 # ICV bit
                wrap(_flip(esp2, 8 + alg_.iv_len)),                # first ciphertext byte
                valid[[i for i, x in enumerate(idx) if x == c.idx_in][-1]],   # replay of the newest
                wrap(esp1[: 8 + alg_.iv_len + icv_len + 1]),       # shorter than the minimum ESP
                wrap(struct.pack("!I", unused_spi) + esp1[4:])]    # nobody's SPI
        expect += [Status.AUTH_FAILED, Status.AUTH_FAILED, Status.REPLAY, Status.MALFORMED, Status.NO_SA]
    res = run(eng, "in", bad)
    for n, (c, (status, _, _)) in enumerate(zip([c for c in cells for _ in range(5)], res, strict=True)):
        if status != expect[n]:
            errors.append(f"{c.name}: negative case {n % 5} got {status.name}, expected {expect[n].name}")
    for c in cells:
        drops = eng.stats(c.idx_in).drops
        want = {Status.AUTH_FAILED: 2, Status.REPLAY: 1, Status.MALFORMED: 1}
        got = {s: drops.get(s, 0) for s in want}
        if got != want or sum(drops.values()) != 4:
            errors.append(f"{c.name}: per-SA drops {dict(drops)}")
    if eng.engine_drops().get(Status.NO_SA, 0) != len(cells):
        errors.append(f"engine-wide drops {eng.engine_drops()}, expected NO_SA={len(cells)}")

    # The genuine extras were never accepted: failed ICVs must not have moved the window.
    res = run(eng, "in", [p for c in cells for p in extras[c.name]])
    for n, (status, out, _) in enumerate(res):
        c = cells[n // 2]
        if status != Status.OK or out != c.inners[0]:
            errors.append(f"{c.name}: untampered extra {n % 2} after the failures got {status.name}")
    assert not errors, f"{engine_name} {alg_id(alg)}: {len(errors)} problems:\n" + "\n".join(errors[:40])
