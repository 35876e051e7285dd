"""Per-packet AH transforms (RFC 4302; RFC 4543 for AES-GMAC) in pure Python (docs/ah.md).

AH authenticates the whole packet, outer header included, without encrypting
it.  The ICV is computed over a copy of the packet in which every field a
router may change is zeroed (``icv_input``); the rest of an AH session --
outer header, ECN, selectors, lifetimes, counters -- is the ESP session's
(fastpath/esp_ref.py), which ``AhSession`` extends.
"""

from __future__ import annotations

import hmac as _hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cdefs.algorithms import AhIntegAlg
from cdefs.sa import SA, Direction, Mode
from fastpath import iphdr
from fastpath.esp_ref import Drop, Session
from fastpath.iphdr import MalformedPacket
from fastpath.replay import SEQ32_MAX
from fastpath.status import Status

AH_FIXED = 12       # next header, payload length, reserved, SPI, sequence number

# RFC 4302 appendix A.1: the IPv4 options included in the ICV as they are (by
# option type byte); every other option is zeroed whole, type and length too.
IPV4_IMMUTABLE_OPTIONS = frozenset((0, 1, 130, 133, 134, 148, 149))
IPV6_OPT_MUTABLE = 0x20     # RFC 8200 4.2: the option's data may change en route

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def icv_field_len(alg: AhIntegAlg, version: int) -> int:
    """The ICV field with its alignment padding: AH is a multiple of 32 (IPv4) / 64 (IPv6) bits."""
    align = 4 if version == 4 else 8
    return alg.field_len + (-(AH_FIXED + alg.field_len) % align)


def _zero_ipv4(pkt: bytearray) -> None:
    pkt[1] = 0                      # TOS: DSCP and ECN
    pkt[6:8] = b"\x00\x00"          # flags and fragment offset
    pkt[8] = 0                      # TTL
    pkt[10:12] = b"\x00\x00"        # checksum
    ihl = (pkt[0] & 0x0F) * 4
    i = 20
    while i < ihl:
        kind = pkt[i]
        if kind == 0:
            break                   # end of list: what follows is (immutable) padding
        if kind == 1:
            i += 1
            continue
        if i + 2 > ihl or pkt[i + 1] < 2 or i + pkt[i + 1] > ihl:
            raise MalformedPacket("bad IPv4 option length")
        length = pkt[i + 1]
        if kind not in IPV4_IMMUTABLE_OPTIONS:
            pkt[i:i + length] = bytes(length)
        i += length


def _zero_ipv6_options(pkt: bytearray, start: int, end: int) -> None:
    i = start
    while i < end:
        kind = pkt[i]
        if kind == 0:               # Pad1 has no length byte
            i += 1
            continue
        if i + 2 > end or i + 2 + pkt[i + 1] > end:
            raise MalformedPacket("bad IPv6 option length")
        length = pkt[i + 1]
        if kind & IPV6_OPT_MUTABLE:
            pkt[i + 2:i + 2 + length] = bytes(length)
        i += 2 + length


def _route_as_received(pkt: bytearray, off: int) -> None:
    """Rewrite a type 0/2 routing header and the destination as the final destination will see them.

    The sender authenticates the packet in its arrival form (RFC 4302 3.3.3.1.2.2): each hop swaps the
    destination with the next listed address (RFC 8200 4.4), so run those swaps here.
    """
    seg_left = pkt[off + 3]
    if not seg_left:
        return
    rtype, n = pkt[off + 2], pkt[off + 1] // 2
    if rtype not in (0, 2) or seg_left > n:
        raise MalformedPacket(f"routing header type {rtype} with {seg_left} segments left")
    addr_off = off + 8
    for i in range(n - seg_left, n):
        a = addr_off + 16 * i
        pkt[24:40], pkt[a:a + 16] = pkt[a:a + 16], pkt[24:40]
    pkt[off + 3] = 0


def _zero_ipv6(pkt: bytearray, ah_off: int, sending: bool) -> None:
    pkt[0] = 0x60                   # traffic class (high nibble) ...
    pkt[1:4] = b"\x00\x00\x00"      # ... its low nibble and the flow label
    pkt[7] = 0                      # hop limit
    nh, off = pkt[6], 40
    while off < ah_off:
        length = (pkt[off + 1] + 1) * 8
        if nh in (iphdr.PROTO_HOPOPTS, iphdr.PROTO_DSTOPTS):
            _zero_ipv6_options(pkt, off + 2, off + length)
        elif nh == iphdr.PROTO_ROUTING and sending:
            _route_as_received(pkt, off)
        nh, off = pkt[off], off + length


def icv_input(pkt: bytes, version: int, ah_off: int, icv_len: int, sending: bool) -> bytes:
    """The packet as the ICV covers it: mutable fields and the ICV (GMAC: IV and tag) zeroed.

    ``icv_len`` leaves out the alignment padding, which the ICV covers as sent (RFC 4302 3.3.3.2.1).

    ``sending``: the packet is on its way out, so an IPv6 routing header is authenticated as the final
    destination will receive it.  Raises MalformedPacket on options that cannot be walked.
    """
    buf = bytearray(pkt)
    if version == 4:
        _zero_ipv4(buf)
    else:
        _zero_ipv6(buf, ah_off, sending)
    start = ah_off + AH_FIXED
    buf[start:start + icv_len] = bytes(icv_len)
    return bytes(buf)


def _insert_point(pkt: bytes, info: iphdr.IPInfo) -> tuple[int, int, int]:
    """Where transport-mode AH goes: (offset, protocol after it, offset of the byte naming it).

    IPv6: after Hop-by-Hop, Routing and any Destination Options ahead of a Routing header (RFC 4302
    3.1.1); Destination Options after Routing are for the final destination and stay behind AH.
    """
    if info.version == 4:
        return info.hdr_len, info.proto, 9
    nh, off, proto_off, routed = pkt[6], 40, 6, False
    while nh in (iphdr.PROTO_HOPOPTS, iphdr.PROTO_ROUTING, iphdr.PROTO_DSTOPTS):
        if nh == iphdr.PROTO_DSTOPTS and routed:
            break
        if off + 8 > info.total_len or off + (pkt[off + 1] + 1) * 8 > info.total_len:
            raise MalformedPacket("truncated IPv6 extension header")
        routed = routed or nh == iphdr.PROTO_ROUTING
        proto_off, nh, off = off, pkt[off], off + (pkt[off + 1] + 1) * 8
    return off, nh, proto_off


class AhSession(Session):
    """One installed AH SA."""

    def __init__(self, sa: SA, direction: Direction):
        super().__init__(sa, direction)
        alg = sa.integ_alg
        assert isinstance(alg, AhIntegAlg)
        self.alg = alg
        self._gmac: AESGCM | None = None
        if alg.hash == "gmac":
            key = bytes(self._integ_key)
            self._gmac = AESGCM(key[:-alg.salt_len])
            self._salt = bytearray(key[-alg.salt_len:])

    def wipe(self) -> None:
        super().wipe()
        self._gmac = None

    def _icv(self, data: bytes, seq: int, iv: bytes | None = None) -> bytes:
        """The ICV field contents (GMAC: IV then tag), without alignment padding.

        ``iv``: GMAC's IV as received; on the way out it is the sequence number, which only has to be
        unique under the key (RFC 4543 3.1).
        """
        # RFC 4302 3.3.3.2.1: with ESN the high half is authenticated after the packet, never sent.
        esn = struct.pack("!I", seq >> 32) if self.sa.esn else b""
        if self._gmac is not None:
            # RFC 4543: the whole zeroed packet is the AAD and the plaintext is empty.
            iv = struct.pack("!Q", seq) if iv is None else iv
            return iv + self._gmac.encrypt(bytes(self._salt) + iv, b"", data + esn)
        h = crypto_hmac.HMAC(bytes(self._integ_key), _HASHES[self.alg.hash]())
        h.update(data + esn)
        return h.finalize()[:self.alg.icv_len]

    def _verify(self, pkt: bytes, version: int, ah_off: int, seq: int) -> bool:
        start = ah_off + AH_FIXED
        got = pkt[start:start + self.alg.field_len]
        iv = got[:self.alg.iv_len] if self._gmac is not None else None
        want = self._icv(icv_input(pkt, version, ah_off, self.alg.field_len, sending=False), seq, iv)
        return _hmac.compare_digest(want, got)

    # -- outbound -------------------------------------------------------------

    def outbound(self, pkt: bytes, slot_size: int) -> bytes:
        """Add AH to one IP packet; raises Drop."""
        sa = self.sa
        self._outbound_allowed()
        try:
            info = iphdr.parse_ip(pkt, frozenset(), exact=False)
            pkt = pkt[:info.total_len]
            self._check_hard_bytes(len(pkt))
            seq = self.next_seq
            spends_id = None
            if sa.mode is Mode.TUNNEL:
                if sa.src.version == 4 and self.ip_id == 0:
                    self.ip_id = 1          # see _encap_transport: an IPv4 AH packet never carries ID 0
                out, ah_off = self._encap_tunnel(pkt, info, seq)
            else:
                out, ah_off, spends_id = self._encap_transport(pkt, info, seq)
        except MalformedPacket:
            raise Drop(Status.MALFORMED) from None
        return self._outbound_commit(pkt, out, seq, slot_size, spends_id)

    def _ah_header(self, nh: int, version: int, seq: int) -> bytes:
        """AH with a zero ICV field; the padding stays zero (RFC 4302 lets the sender choose it)."""
        field_len = icv_field_len(self.alg, version)
        hdr = struct.pack("!BBHII", nh, (AH_FIXED + field_len) // 4 - 2, 0, self.sa.spi, seq & SEQ32_MAX)
        return hdr + bytes(field_len)

    def _sign(self, out: bytearray, version: int, ah_off: int, seq: int) -> bytes:
        icv = self._icv(icv_input(bytes(out), version, ah_off, self.alg.field_len, sending=True), seq)
        out[ah_off + AH_FIXED:ah_off + AH_FIXED + len(icv)] = icv
        return bytes(out)

    def _encap_tunnel(self, pkt: bytes, info: iphdr.IPInfo, seq: int) -> tuple[bytes, int]:
        version = self.sa.src.version
        nh = iphdr.PROTO_IPIP if info.version == 4 else iphdr.PROTO_IPV6
        ah = self._ah_header(nh, version, seq)
        out = bytearray(self._tunnel_header(info, ah + pkt, iphdr.PROTO_AH))
        ah_off = 20 if version == 4 else 40
        return self._sign(out, version, ah_off, seq), ah_off

    def _encap_transport(self, pkt: bytes, info: iphdr.IPInfo, seq: int) -> tuple[bytes, int, bool]:
        """(packet, AH offset, whether the SA's ID counter was given to it).  The IPv4 ID is immutable for
        AH, and Linux's raw send (IP_HDRINCL) replaces an ID of 0 after the ICV covered it, so a packet
        whose ID is 0 takes the SA's next non-zero one before it is signed (RFC 6864 4.1: the source of
        an atomic datagram may pick any ID; in transport mode the gateway is that source)."""
        if info.version == 4 and info.frag & (iphdr.IPV4_MF | iphdr.IPV4_OFFSET_MASK):
            # RFC 4302 3.3.4: AH covers whole packets; a fragment's ICV could never be checked.
            raise Drop(Status.FRAGMENT)
        ah_off, nh, proto_off = _insert_point(pkt, info)
        if info.version == 6 and nh == iphdr.PROTO_FRAGMENT:
            raise Drop(Status.FRAGMENT)
        ah = self._ah_header(nh, info.version, seq)
        hdr = bytearray(pkt[:ah_off])
        hdr[proto_off] = iphdr.PROTO_AH
        rest = len(ah) + len(pkt) - ah_off
        spends_id = False
        if info.version == 4:
            if hdr[4:6] == b"\x00\x00":
                self.ip_id = self.ip_id or 1
                struct.pack_into("!H", hdr, 4, self.ip_id)
                spends_id = True
            struct.pack_into("!H", hdr, 2, len(hdr) + rest)
            iphdr.fix_ipv4_checksum(hdr)
        else:
            struct.pack_into("!H", hdr, 4, len(hdr) - 40 + rest)
        out = bytearray(hdr + ah + pkt[ah_off:])
        return self._sign(out, info.version, ah_off, seq), ah_off, spends_id

    # -- inbound --------------------------------------------------------------

    def inbound(self, pkt: bytes, outer: iphdr.IPInfo, ah_off: int) -> bytes:
        """Verify and remove one located AH header; raises Drop."""
        sa, st = self.sa, self.stats
        assert self.replay is not None
        self._check_hard_packets()
        field_len = icv_field_len(self.alg, outer.version)
        ah_len = (pkt[ah_off + 1] + 2) * 4
        # The ICV field is exactly the algorithm's, with the minimal padding (RFC 4302 2.6).
        if ah_len != AH_FIXED + field_len or ah_off + ah_len > len(pkt):
            raise Drop(Status.MALFORMED)

        seq = self.replay.check(struct.unpack_from("!I", pkt, ah_off + 8)[0])
        if seq is None:
            raise Drop(Status.REPLAY)
        try:
            ok = self._verify(pkt, outer.version, ah_off, seq)
        except MalformedPacket:
            raise Drop(Status.MALFORMED) from None
        if not ok:
            raise Drop(Status.AUTH_FAILED)
        if not self.replay.update(seq):
            raise Drop(Status.REPLAY)
        st.seq = self.replay.top

        nh = pkt[ah_off]
        data = pkt[ah_off + ah_len:]
        if sa.mode is Mode.TUNNEL:
            out = self._decap_tunnel(data, nh, outer)
        else:
            hdr = bytearray(pkt[:ah_off])
            hdr[outer.proto_off] = nh
            if outer.version == 4:
                struct.pack_into("!H", hdr, 2, len(hdr) + len(data))
                iphdr.fix_ipv4_checksum(hdr)
            else:
                struct.pack_into("!H", hdr, 4, len(hdr) - 40 + len(data))
            out = bytes(hdr) + data

        self._check_selectors(out)
        self._check_hard_bytes(len(out))
        self._count(len(out))
        return out


def locate_ah(pkt: bytes) -> tuple[iphdr.IPInfo, int, int]:
    """Find the AH header in an outer packet: (outer header info, AH offset, IP end).

    Raises Drop with NOT_ESP (not AH), FRAGMENT or MALFORMED, as ``locate_esp`` does.
    """
    try:
        info = iphdr.parse_ip(pkt, iphdr.EXT_INBOUND, exact=False)
    except MalformedPacket:
        raise Drop(Status.MALFORMED) from None
    if info.proto != iphdr.PROTO_AH:
        raise Drop(Status.NOT_ESP)
    if info.frag & (iphdr.IPV4_MF | iphdr.IPV4_OFFSET_MASK):
        raise Drop(Status.FRAGMENT)
    if info.hdr_len + AH_FIXED > info.total_len:
        raise Drop(Status.MALFORMED)
    return info, info.hdr_len, info.total_len
