"""Fuzz target: the inbound ESP parsers in C.

Three ways in, chosen by the first byte of an input:

- ``ENGINE``: whole outer packets (IPv4/IPv6, ESP or ESP-in-UDP) into ``inbound`` of each C engine
  (openssl, ipsec-mb: cdefs/esp/esp_core.c and its back ends) against real installed SAs;
- ``UDP``: the UDP payload of such a packet as a datagram on a loopback UDP socket into ``kio_recv_udp4``
  (the ESP-in-UDP classifier: non-ESP marker, NAT keepalive, steering probe, short datagrams), then into
  the engine;
- ``CLEAR``: a virtio-net header + Ethernet frame + IP packet on an AF_UNIX datagram socket into
  ``kio_pkt_read`` (cdefs/kio/kio_packet.c: the AF_PACKET clear-side read, and the TCP super-segment
  cutter behind it).

An ENGINE or UDP input is either ``RAW`` (the packet's bytes as they are; the custom mutator edits its
fields: lengths, SPI, protocol, UDP ports and markers, truncation at header boundaries) or ``SEALED`` (a
recipe read with FuzzedDataProvider: inner packet, padding bytes, pad length, next header, sequence
number, outer damage), sealed here with the SA's real keys, so a bad pad or next header arrives under a
valid ICV and reaches the checks behind the integrity check.

Oracle: nothing raises; every packet ends with a status of fastpath.status.Status other than INTERNAL;
a packet that was not mutated (sealed for a control SA and put in the same batch) still decrypts to its
inner packet; ``kio_recv_udp4`` keeps exactly the datagrams that are not IKE, probe or keepalive.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import socket
import struct

import atheris
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support.packets import inner_packet, outer_esp
from support.sa import make_sa, scapy_sa

from cdefs.sa import SA, Direction, Mode
from fastpath.batch import Batch
from fastpath.engines import create
from fastpath.io import kio
from fastpath.status import Status
from fuzz.harness import FuzzFailure

ENGINE, UDP, CLEAR = 0, 1, 2
RAW, SEALED = 0, 1
ENGINE_NAMES = ("openssl", "ipsec-mb")
LOCAL4 = "198.51.100.2"          # the SAs' destination (support.sa.V4_B): where inbound ESP is addressed
CONTROL = 8                      # index of the control SA: never mutated, must always decrypt

# The fuzzed SAs, at indexes 0..3: both AEAD and encrypt-then-MAC framing, IPv4 and IPv6 outer headers,
# plain ESP and ESP-in-UDP, tunnel and transport, 32- and 64-bit sequence numbers.
SA_SPECS = [
    dict(enc="aes-gcm-128", spi=0x1001),
    dict(enc="aes-cbc-128", integ="hmac-sha256-128", spi=0x1002, udp_encap=True),
    dict(enc="aes-gcm-256", spi=0x1003, family=6, mode=Mode.TRANSPORT),
    dict(enc="aes-gcm-128", spi=0x1004, udp_encap=True, esn=True),
]
SAS: list[SA] = [make_sa(keys="fixed", **spec) for spec in SA_SPECS]
CONTROL_SA = make_sa("aes-gcm-128", keys="fixed", spi=0x2008, replay_window=0)


def _engines() -> list:
    out = []
    for name in ENGINE_NAMES:
        try:
            out.append(create(name, capacity=16))
        except Exception:  # noqa: BLE001 - an engine not built here is simply not fuzzed
            continue
    if not out:
        raise SystemExit("esp_inbound: neither the openssl nor the ipsec-mb engine is available")
    for e in out:
        e.add_sa(CONTROL, CONTROL_SA, Direction.IN)
    return out


ENGINES = _engines()
BATCH = Batch(capacity=4, mtu=2048)
KB = kio.KBatch(BATCH)
CLEAR_BATCH = Batch(capacity=64, mtu=2048)
CLEAR_KB = kio.KBatch(CLEAR_BATCH)
RX = kio.TunRx()
_control_seq = 0


# ---- sealing: ESP framing of RFC 4303 with the SA's keys, any trailer we like --------------------------

def seal(sa: SA, plaintext: bytes, seq: int, iv: bytes) -> bytes:
    """The ESP packet (header to ICV) carrying ``plaintext`` (payload + padding + pad length + next header,
    taken as given, so it may be wrong) with a valid ICV for ``sa``."""
    spi_seq = struct.pack("!II", sa.spi, seq & 0xFFFFFFFF)
    hi = struct.pack("!I", seq >> 32) if sa.esn else b""
    if sa.enc.startswith("aes-gcm"):
        iv = iv[:8].ljust(8, b"\0")
        aad = spi_seq[:4] + hi + spi_seq[4:]
        body = AESGCM(sa.cipher_key).encrypt(sa.salt + iv, plaintext, aad)
        return spi_seq + iv + body
    iv = iv[:16].ljust(16, b"\0")
    whole = len(plaintext) - len(plaintext) % 16
    enc = Cipher(algorithms.AES(sa.cipher_key), modes.CBC(iv)).encryptor()
    ct = (enc.update(plaintext[:whole]) + enc.finalize()) + plaintext[whole:]   # a ragged tail stays clear
    icv = hmac.new(sa.integ_key, spi_seq + iv + ct + hi, hashlib.sha256).digest()[:16]
    return spi_seq + iv + ct + icv


def good_trailer(payload: bytes, block: int, nh: int) -> bytes:
    pad = (-(len(payload) + 2)) % block
    return payload + bytes(range(1, pad + 1)) + bytes([pad, nh])


def outer(sa: SA, esp: bytes) -> bytes:
    return outer_esp(sa.src, sa.dst, esp, udp_encap=sa.udp_encap, sport=sa.sport, dport=sa.dport)


def inner_for(sa: SA, payload: bytes) -> tuple[bytes, int]:
    """(inner bytes, next header) of a valid packet through ``sa``."""
    if sa.mode is Mode.TRANSPORT:
        return payload, 17          # a transport payload the SA carries as it is (UDP says the trailer)
    v = 4 if len(payload) % 2 == 0 else 6
    return inner_packet(v, payload).data, 4 if v == 4 else 41


def sealed(fdp: atheris.FuzzedDataProvider) -> tuple[int, bytes]:
    """(SA index, outer packet) from a recipe: every field of the trailer and the outer packet may be
    wrong, but the ICV is right for what was sealed."""
    idx = fdp.ConsumeIntInRange(0, len(SAS) - 1)
    sa = SAS[idx]
    block = 4 if sa.enc.startswith("aes-gcm") else 16
    seq = fdp.ConsumeIntInRange(0, 2**64 - 1 if sa.esn else 2**32 - 1)
    if fdp.ConsumeIntInRange(0, 3):
        seq &= 0xFFFF                 # mostly small numbers, inside any window
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    inner, nh = inner_for(sa, payload)
    if fdp.ConsumeBool():             # damage the inner header (lengths, version, IHL)
        b = bytearray(inner)
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            if b:
                b[fdp.ConsumeIntInRange(0, len(b) - 1)] = fdp.ConsumeInt(1) & 0xFF
        inner = bytes(b)
    if fdp.ConsumeBool():
        inner = inner[:fdp.ConsumeIntInRange(0, len(inner))]
    plain = good_trailer(inner, block, nh)
    how = fdp.ConsumeIntInRange(0, 5)
    if how == 1:                      # pad length past the payload
        plain = plain[:-2] + bytes([fdp.ConsumeInt(1) & 0xFF]) + plain[-1:]
    elif how == 2:                    # padding bytes not 1, 2, 3...
        padlen = plain[-2]
        if padlen:
            pad = fdp.ConsumeBytes(padlen).ljust(padlen, b"\0")
            plain = plain[:-2 - padlen] + pad + plain[-2:]
    elif how == 3:                    # another next header (dummy 59, unknown, IPv4 for IPv6 ...)
        plain = plain[:-1] + bytes([fdp.ConsumeInt(1) & 0xFF])
    elif how == 4:                    # a plaintext of any length, trailer and all
        plain = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    esp = seal(sa, plain, seq, fdp.ConsumeBytes(16))
    pkt = bytearray(outer(sa, esp))
    cut = fdp.ConsumeIntInRange(0, 7)
    if cut == 1:                      # truncated anywhere
        pkt = pkt[:fdp.ConsumeIntInRange(0, len(pkt))]
    elif cut == 2:                    # bytes after the ICV (the IP length still covers them, or not)
        pkt += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40))
    elif cut == 3:                    # another SA's SPI, or one not installed
        o = _esp_offset(bytes(pkt))
        if o is not None:
            spi = fdp.PickValueInList([s.spi for s in SAS] + [CONTROL_SA.spi, 0, 0xFFFFFFFF, 0x100])
            pkt[o:o + 4] = struct.pack("!I", spi)
    return idx, bytes(pkt)


# ---- the structure of an outer packet, for the RAW mutator ----------------------------------------------

def _fields(pkt: bytes) -> dict[str, int]:
    """Offsets of the fields the mutator edits (those present in ``pkt``)."""
    f: dict[str, int] = {}
    if not pkt:
        return f
    if pkt[0] >> 4 == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 15) * 4
        f.update(ip_len=2, ip_proto=9, ip_frag=6, l4=ihl)
        proto = pkt[9]
    elif pkt[0] >> 4 == 6 and len(pkt) >= 40:
        f.update(ip6_len=4, ip_proto=6, l4=40)
        proto = pkt[6]
    else:
        return f
    l4 = f["l4"]
    if proto == 17 and len(pkt) >= l4 + 8:
        f.update(udp_sport=l4, udp_dport=l4 + 2, udp_len=l4 + 4, esp=l4 + 8)
    elif proto == 50:
        f["esp"] = l4
    return f


def _esp_offset(pkt: bytes) -> int | None:
    o = _fields(pkt).get("esp")
    return o if o is not None and len(pkt) >= o + 8 else None


def _put16(b: bytearray, off: int, v: int) -> None:
    if off + 2 <= len(b):
        b[off:off + 2] = struct.pack("!H", v & 0xFFFF)


def mutate_packet(pkt: bytes, max_size: int, rng: random.Random) -> bytes:
    """One edit that knows where the lengths, ports, SPI and trailer of an outer packet are."""
    b = bytearray(pkt)
    f = _fields(pkt)
    choice = rng.randrange(10)
    n = len(b)
    if choice == 0 and "ip_len" in f:
        _put16(b, f["ip_len"], rng.choice([0, 19, 20, n - 1, n, n + 1, 0xFFFF, rng.randrange(0x10000)]))
    elif choice == 0 and "ip6_len" in f:
        _put16(b, f["ip6_len"], rng.choice([0, n - 41, n - 40, n - 39, 0xFFFF, rng.randrange(0x10000)]))
    elif choice == 1 and "udp_len" in f:
        u = n - f["l4"]
        _put16(b, f["udp_len"], rng.choice([0, 7, 8, 9, u - 1, u, u + 1, 0xFFFF]))
    elif choice == 2 and "udp_dport" in f:
        _put16(b, f[rng.choice(["udp_sport", "udp_dport"])], rng.choice([4500, 500, 0, 4501, rng.randrange(1 << 16)]))
    elif choice == 3 and "esp" in f:       # IKE's non-ESP marker, a keepalive, a steering probe
        o = f["esp"]
        kind = rng.randrange(3)
        tail = (b"\0\0\0\0" + bytes(b[o + 4:]) if kind == 0 else b"\xff" if kind == 1
                else b"IPSGPROB" + rng.randbytes(8))
        b = b[:o] + bytearray(tail)
    elif choice == 4 and "esp" in f and n >= f["esp"] + 4:
        spis = [s.spi for s in SAS] + [CONTROL_SA.spi, 0, 1, 255, 256, 0xFFFFFFFF]
        b[f["esp"]:f["esp"] + 4] = struct.pack("!I", rng.choice(spis))
    elif choice == 5 and "ip_proto" in f:
        b[f["ip_proto"]] = rng.choice([50, 17, 51, 0, 43, 44, 60, 6, rng.randrange(256)])
    elif choice == 6 and "ip_frag" in f:
        _put16(b, f["ip_frag"], rng.choice([0x2000, 0x0001, 0x4000, 0x3FFF, rng.randrange(0x10000)]))
    elif choice == 7:                      # cut at a header boundary or inside the trailer
        points = [v for v in f.values() if v < n] + [n - 1, n - 2, n - 16, n - 17, n - 32]
        b = b[:max(0, rng.choice(points))]
    elif choice == 8 and n:                # the encrypted trailer area: ICV, pad length, next header
        for _ in range(rng.randrange(1, 4)):
            i = max(0, n - 1 - rng.randrange(min(n, 40)))
            b[i] ^= 1 << rng.randrange(8)
    else:
        return atheris.Mutate(bytes(b), max_size)
    return bytes(b[:max_size])


# ---- the clear-side frames (kio_pkt_read) ---------------------------------------------------------------

def vnet_hdr(flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_off: int) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_off)


def _tcp_packet(v6: bool, payload: bytes) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    ip = IPv6(src="2001:db8:1::2", dst="2001:db8:2::2") if v6 else IP(src="10.1.0.2", dst="10.2.0.2", flags="DF")
    return bytes(ip / TCP(sport=40000, dport=5201, seq=1000, flags="PA") / payload)


ETH = bytes(12) + b"\x08\x00"


def clear_frames() -> list[bytes]:
    """Frames as an AF_PACKET SOCK_RAW socket with PACKET_VNET_HDR reads them: TCP super-segments (TSO4,
    TSO6, checksum partial) and plain packets."""
    out = []
    for v6 in (False, True):
        pkt = _tcp_packet(v6, bytes(range(256)) * 12)
        l4 = 40 if v6 else 20
        eth = bytes(12) + (b"\x86\xdd" if v6 else b"\x08\x00")
        # csum_start counts the Ethernet header, as the kernel gives it on a packet socket
        out.append(vnet_hdr(1, 4 if v6 else 1, l4 + 20, 1000, 14 + l4, 16) + eth + pkt)
        out.append(vnet_hdr(0, 0, 0, 0, 0, 0) + eth + _tcp_packet(v6, b"x" * 20))
    return out


# ---- the target -----------------------------------------------------------------------------------------

def _control_packet() -> tuple[bytes, bytes]:
    global _control_seq
    _control_seq += 1
    inner = inner_packet(4, b"control %d" % _control_seq).data
    esp = seal(CONTROL_SA, good_trailer(inner, 4, 4), _control_seq, _control_seq.to_bytes(8, "big"))
    return outer(CONTROL_SA, esp), inner


def _reinstall(engine) -> None:
    """Fresh SAs for each input: replay state left by one input must not decide what the next one does."""
    for i, sa in enumerate(SAS):
        try:
            engine.remove_sa(i)
        except Exception:  # noqa: BLE001 - the first input finds none
            pass
        engine.add_sa(i, sa, Direction.IN)


def observe(path: int, st: Status) -> None:
    """One branch per way in and per status.  The C engines are not coverage-instrumented, so these
    branches (this module is instrumented with the product) are what tells libFuzzer that an input
    reached a new verdict of the C parsers; without them every input would look the same to it."""
    if path == UDP:
        st = Status(st)
        if st is Status.OK:
            return
        if st is Status.NO_SA:
            return
        if st is Status.AUTH_FAILED:
            return
        if st is Status.MALFORMED:
            return
        if st is Status.PADDING:
            return
        if st is Status.REPLAY:
            return
        return
    if st is Status.OK:
        return
    if st is Status.NOT_ESP:
        return
    if st is Status.NO_SA:
        return
    if st is Status.AUTH_FAILED:
        return
    if st is Status.REPLAY:
        return
    if st is Status.MALFORMED:
        return
    if st is Status.PADDING:
        return
    if st is Status.SELECTOR:
        return
    if st is Status.DUMMY:
        return
    if st is Status.ECN:
        return
    if st is Status.FRAGMENT:
        return
    if st is Status.TOO_BIG:
        return
    return


def _check_batch(engine, packets: list[bytes], control: tuple[bytes, bytes] | None, path: int = ENGINE) -> None:
    BATCH.clear()
    for p in packets:
        if len(p) <= BATCH.max_packet:
            BATCH.append(p)
    if control:
        BATCH.append(control[0])
    n = BATCH.n
    engine.inbound(BATCH)
    if BATCH.n != n:
        raise FuzzFailure(f"{engine.name}: batch of {n} came back with {BATCH.n}")
    for i in range(n):
        st = int(BATCH.status[i])
        if st not in Status._value2member_map_ or st == Status.INTERNAL:
            raise FuzzFailure(f"{engine.name}: packet {i} got status {st}")
        if Status(st) is Status.OK and not 0 < int(BATCH.len[i]) <= BATCH.slot_size:
            raise FuzzFailure(f"{engine.name}: packet {i} OK with length {int(BATCH.len[i])}")
        observe(path, Status(st))
    if control:
        st = Status(int(BATCH.status[n - 1]))
        if st is not Status.OK or BATCH.packet(n - 1) != control[1]:
            raise FuzzFailure(f"{engine.name}: the control packet after {packets!r} came out {st.label}")


_udp: tuple[socket.socket, socket.socket] | None = None


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    global _udp
    if _udp is None:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        _udp = (tx, rx)
    return _udp


def _expect_kept(pay: bytes) -> int:
    """What kio_recv_udp4 must do with one UDP payload (RFC 3948 and our steering probe)."""
    if len(pay) >= 4 and pay[:4] == b"\0\0\0\0":
        return 0
    if len(pay) == 16 and pay[:8] == b"IPSGPROB":
        return 0
    if pay == b"\xff":
        return 0
    return 1


def _via_udp(engine, pkt: bytes) -> None:
    f = _fields(pkt)
    pay = pkt[f["esp"]:] if "udp_len" in f else pkt[f.get("l4", 0):]
    pay = pay[:BATCH.max_packet - 28]
    tx, rx = _udp_pair()
    tx.send(pay)
    BATCH.clear()
    kept, ike, _probe = KB.recv_udp4(rx.fileno(), ipaddress.ip_address(LOCAL4).packed, 4500, limit=1)
    if kept != _expect_kept(pay) or ike != (len(pay) >= 4 and pay[:4] == b"\0\0\0\0"):
        raise FuzzFailure(f"kio_recv_udp4 kept {kept} (IKE {ike}) of a {len(pay)}-byte datagram {pay[:16].hex()}")
    if kept:
        BATCH.n = 1
        wire = BATCH.packet(0)
        if wire[28:] != pay:
            raise FuzzFailure("kio_recv_udp4 changed the payload")
        _check_batch(engine, [wire], _control_packet(), UDP)


def _clear(data: bytes) -> None:
    a, b = _clear_pair()
    a.send(data[:kio.VNET_HDR_LEN + 14 + kio.GSO_MAX])
    bt = CLEAR_BATCH
    # one read is at most 64 KiB, so at most 64 Ki one-byte segments: a batch at a time, then nothing left
    for _ in range(kio.GSO_MAX // bt.capacity + 2):
        n = kio.lib.kio_pkt_read(b.fileno(), CLEAR_KB.c, 0, bt.capacity, RX.c)
        if n < 0:
            raise FuzzFailure(f"kio_pkt_read returned {n}")
        for i in range(n):
            if not 0 < int(bt.len[i]) <= bt.slot_size - bt.tailroom:
                raise FuzzFailure(f"kio_pkt_read emitted a {int(bt.len[i])}-byte packet")
        if n == 0 and not RX.pending:
            return
    raise FuzzFailure("kio_pkt_read kept emitting past what one read can hold")


_unix: tuple[socket.socket, socket.socket] | None = None


def _clear_pair() -> tuple[socket.socket, socket.socket]:
    global _unix
    if _unix is None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        b.setblocking(False)
        _unix = (a, b)
    return _unix


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    path, eng, mode, body = data[0] % 3, data[1], data[2] % 2, data[3:]
    if path == CLEAR:
        _clear(body)
        return
    engine = ENGINES[eng % len(ENGINES)]
    _reinstall(engine)
    if mode == SEALED:
        _, pkt = sealed(atheris.FuzzedDataProvider(body))
    else:
        pkt = body
    if path == UDP:
        _via_udp(engine, pkt)
    else:
        _check_batch(engine, [pkt], _control_packet())


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if len(data) < 3 or rng.randrange(50) == 0:
        return atheris.Mutate(data, max_size)
    head, body = bytearray(data[:3]), data[3:]
    if rng.randrange(8) == 0:                 # another way in, another engine
        head[rng.randrange(2)] = rng.randrange(256)
    if data[0] % 3 == CLEAR:
        return bytes(head) + _mutate_frame(body, max_size - 3, rng)
    if data[2] % 2 == SEALED:
        return bytes(head) + atheris.Mutate(body, max(1, max_size - 3))
    return bytes(head) + mutate_packet(body, max(1, max_size - 3), rng)


def _mutate_frame(frame: bytes, max_size: int, rng: random.Random) -> bytes:
    """Edit the vnet header fields (flags, GSO type, header length, segment size, checksum start/offset)
    or the IP packet behind the Ethernet header."""
    b = bytearray(frame)
    if len(b) < 24 or rng.randrange(3) == 0:
        return atheris.Mutate(frame, max(1, max_size))
    which = rng.randrange(7)
    if which == 0:
        b[0] = rng.choice([0, 1, 2, 3, rng.randrange(256)])
    elif which == 1:
        b[1] = rng.choice([0, 1, 3, 4, 5, 0x80, 0x81, rng.randrange(256)])
    elif which < 6:
        off = 2 * which
        struct.pack_into("<H", b, off, rng.choice([0, 1, 13, 14, 20, 40, 52, 60, 1000, 0xFFFF, rng.randrange(1 << 16)]))
    else:
        body = mutate_packet(bytes(b[24:]), max(1, max_size - 24), rng)
        b = b[:24] + bytearray(body)
    return bytes(b[:max_size])


def seeds() -> list[bytes]:
    """Packets scapy seals for the SAs (an implementation we did not write), each down every way in and
    through every engine, sealed recipes, and the clear-side frames."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    out = []
    for sa in SAS:
        peer = scapy_sa(sa, seq=7)
        inner = inner_packet(4, b"seed").data
        if sa.mode is Mode.TRANSPORT:
            plain = (IPv6 if sa.src.version == 6 else IP)(
                bytes(inner_packet(sa.src.version, b"seed", src=str(sa.src), dst=str(sa.dst)).data))
        else:
            plain = IP(inner)
        wire = bytes(peer.encrypt(plain))
        for path in (ENGINE, UDP):
            for eng in range(len(ENGINE_NAMES)):
                out.append(bytes([path, eng, RAW]) + wire)
    rng = random.Random(15)
    for k in range(8):
        out.append(bytes([k % 2, k // 2 % 2, SEALED]) + rng.randbytes(64 + 40 * k))
    for frame in clear_frames():
        out.append(bytes([CLEAR, 0, 0]) + frame)
    return out
