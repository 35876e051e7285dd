"""AH SAs as the AH tests build them, scapy's view of the same SA, and an AES-GMAC ICV computed apart
from the code under test.

scapy's AH (scapy.layers.ipsec) is an implementation we did not write: packets it protects must verify in
ours and the other way round.  scapy has no AES-GMAC for AH, so ``gmac_icv`` states RFC 4543's AH
construction directly on ``cryptography``'s AES-GCM, with its own zeroing of the mutable fields.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from cdefs.algorithms import AH_INTEG_ALGS
from cdefs.sa import SA, Mode
from support.sa import endpoints

# Ours -> scapy's names; GMAC is left out because scapy's AH does not have it.
SCAPY_AH_AUTH = {"hmac-sha1-96": "HMAC-SHA1-96", "hmac-sha256-128": "SHA2-256-128",
                 "hmac-sha384-192": "SHA2-384-192", "hmac-sha512-256": "SHA2-512-256"}
HMACS = tuple(SCAPY_AH_AUTH)
GMACS = ("aes-gmac-128", "aes-gmac-192", "aes-gmac-256")


def make_ah_sa(integ: str = "hmac-sha256-128", *, family: int = 4, **kw: Any) -> SA:
    """An AH SA with a random key of the right size; keyword arguments override any field."""
    src, dst = endpoints(family)
    kw.setdefault("spi", int.from_bytes(os.urandom(4), "big") | 0x1000)
    kw.setdefault("src", src)
    kw.setdefault("dst", dst)
    if "integ_key" not in kw:
        kw["integ_key"] = os.urandom(AH_INTEG_ALGS[integ].key_len)
    return SA(enc="null", enc_key=b"", integ=integ, proto="ah", **kw)


def scapy_ah_sa(sa: SA, *, seq: int | None = None):
    """scapy's SecurityAssociation(AH, ...) for an HMAC AH SA; ``seq`` sets its counter (high half: ESN)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH, SecurityAssociation

    header = None
    if sa.mode is Mode.TUNNEL:
        header = (IP if sa.src.version == 4 else IPv6)(src=str(sa.src), dst=str(sa.dst))
    args: dict[str, Any] = {}
    esn_hi = 0
    if seq is not None:
        args["seq_num"] = seq & 0xFFFFFFFF
        esn_hi = seq >> 32
    return SecurityAssociation(AH, spi=sa.spi, auth_algo=SCAPY_AH_AUTH[sa.integ], auth_key=sa.integ_key,
                               tunnel_header=header, esn_en=sa.esn, esn=esn_hi, **args)


def _zeroed_v4(pkt: bytearray) -> None:
    # Only what the GMAC tests send: a 20-byte header, no options.
    pkt[1] = 0
    pkt[6:10] = b"\x00\x00\x00" + pkt[9:10]
    pkt[10:12] = b"\x00\x00"


def _zeroed_v6(pkt: bytearray) -> None:
    pkt[0:4] = b"\x60\x00\x00\x00"
    pkt[7] = 0


def gmac_icv(sa: SA, pkt: bytes, seq: int) -> bytes:
    """RFC 4543 AH: IV || AES-GCM tag over the packet (outer header without options or extension headers)
    with mutable fields, IV and tag zeroed as AAD, empty plaintext, nonce = salt || IV."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    buf = bytearray(pkt)
    version = buf[0] >> 4
    (_zeroed_v4 if version == 4 else _zeroed_v6)(buf)
    ah = 20 if version == 4 else 40
    buf[ah + 12:ah + 36] = bytes(24)      # IV and tag; IPv6's alignment padding is covered as sent
    iv = pkt[ah + 12:ah + 20]
    aad = bytes(buf) + (struct.pack("!I", seq >> 32) if sa.esn else b"")
    key, salt = sa.integ_key[:-4], sa.integ_key[-4:]
    return iv + AESGCM(key).encrypt(salt + iv, b"", aad)


def assert_ah_works(a: Any, b: Any) -> None:
    """Two ``ChildSaEstablished`` of one AH CHILD SA (the two IKE peers'): a packet a's outbound AH
    session protects verifies on b's inbound session and comes out as sent, and back; a flipped payload
    byte fails.  For the HMACs scapy's AH, built from the receiver's SA, verifies it as well."""
    from cdefs.sa import Direction
    from fastpath.ah_ref import AhSession, locate_ah
    from fastpath.esp_ref import Drop
    from fastpath.status import Status
    from support.packets import ipv4, udp

    assert a.outbound.proto == b.inbound.proto == "ah"
    assert a.outbound.spi == b.inbound.spi and a.inbound.spi == b.outbound.spi
    for x, y in ((a, b), (b, a)):
        src, dst = str(x.local_ts[0].start + 5), str(x.remote_ts[0].start + 9)
        inner = ipv4(src, dst, 17, udp(src, dst, 1000, 2000, os.urandom(64)))
        out, inn = AhSession(x.outbound, Direction.OUT), AhSession(y.inbound, Direction.IN)
        wire = out.outbound(inner, 4096)
        assert wire[9] == 51 and inner[20:] in wire      # AH: protocol 51, the payload in the clear
        info, off, end = locate_ah(wire)
        assert inn.inbound(wire[:end], info, off) == inner
        if y.inbound.integ in SCAPY_AH_AUTH:
            from scapy.layers.inet import IP
            assert bytes(scapy_ah_sa(y.inbound).decrypt(IP(wire))) == inner
        bad = bytearray(out.outbound(inner, 4096))
        bad[-1] ^= 1
        info, off, end = locate_ah(bytes(bad))
        try:
            inn.inbound(bytes(bad)[:end], info, off)
        except Drop as drop:
            assert drop.status == Status.AUTH_FAILED
        else:
            raise AssertionError("a flipped byte verified")


def arrived(raw: bytes) -> bytes:
    """A source-routed IPv6 packet as its final destination receives it: what each hop of the route does
    to it (RFC 8200 4.4); any other packet unchanged."""
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrRouting

    pkt = IPv6(raw)
    if IPv6ExtHdrRouting not in pkt:
        return raw
    rt = pkt[IPv6ExtHdrRouting]
    while rt.segleft:
        i = len(rt.addresses) - rt.segleft
        addrs = list(rt.addresses)
        addrs[i], pkt.dst = pkt.dst, addrs[i]
        rt.addresses, rt.segleft = addrs, rt.segleft - 1
    return bytes(pkt)


def exported_ah_sas(keys: str) -> list[tuple[str, str, int, str, bytes]]:
    """(src, dst, spi, algorithm, key) of each line of ``ipsecgw export-keys``' ah_sa table (either family)."""
    import csv

    section = keys.split("# ah_sa\n", 1)[1].split("\n# ", 1)[0]
    out = []
    for fam, src, dst, spi, alg, key in csv.reader(section.splitlines()):
        assert fam == ("IPv6" if ":" in src else "IPv4"), (fam, src)
        out.append((src, dst, int(spi, 16), alg, bytes.fromhex(key.removeprefix("0x"))))
    return out


def wire_verifier(src: str, dst: str, spi: int, alg: str, key: bytes):
    """A function of a captured tunnel-mode AH packet of this SA (scapy IP or IPv6) that raises unless its
    ICV is right and returns the inner packet: scapy's AH for the HMACs, ``gmac_icv`` for AES-GMAC."""
    import ipaddress

    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH, SecurityAssociation

    outer = IPv6 if ":" in src else IP

    def inner(raw: bytes):
        return (IP if raw[0] >> 4 == 4 else IPv6)(raw)

    if alg in SCAPY_AH_AUTH:
        sa = SecurityAssociation(AH, spi=spi, auth_algo=SCAPY_AH_AUTH[alg], auth_key=key,
                                 tunnel_header=outer(src=src, dst=dst))
        return lambda p: inner(bytes(sa.decrypt(p)))       # IPSecIntegrityError on a bad ICV
    ours = SA(spi=spi, src=ipaddress.ip_address(src), dst=ipaddress.ip_address(dst), enc="null", enc_key=b"",
              integ=alg, integ_key=key, proto="ah")
    hl = 20 if outer is IP else 40

    def check(p):
        raw = bytes(p)
        assert raw[hl + 12:hl + 36] == gmac_icv(ours, raw, p[AH].seq), f"bad GMAC ICV, seq {p[AH].seq}"
        return inner(bytes(p[AH].payload))
    return check
