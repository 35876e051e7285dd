"""Per-packet ESP transforms in pure Python on ``cryptography`` (docs/esp.md).

This is the readable statement of the contract: one function per direction,
steps in the order docs/esp.md numbers them, each drop returning the Status
the contract names.  ``ReferenceEngine`` (fastpath/engines/reference.py) adds
the batch, SPI lookup and accounting around it.
"""

from __future__ import annotations

import hmac as _hmac
import ipaddress
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from cdefs.sa import SA, Direction, Mode, TrafficSelector
from fastpath import iphdr
from fastpath.engines.base import SAStats
from fastpath.iphdr import MalformedPacket
from fastpath.replay import SEQ32_MAX, SEQ64_MAX, ReplayWindow
from fastpath.status import SAFlag, Status

NAT_T_PORT = 4500

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class Drop(Exception):
    """Internal control flow: the packet ends with this status."""

    def __init__(self, status: Status):
        super().__init__(status.label)
        self.status = status


class Session:
    """One installed SA: keys, sequence state and counters."""

    def __init__(self, sa: SA, direction: Direction):
        self.sa = sa
        self.direction = Direction(direction)
        self.enc = sa.enc_alg
        self.integ = sa.integ_alg
        self.icv_len = sa.icv_len
        self.spi_bytes = struct.pack("!I", sa.spi)
        # Mutable copies so remove_sa can zero them; the cryptography objects
        # hold their own copy that Python cannot reach.
        self._cipher_key = bytearray(sa.cipher_key)
        self._salt = bytearray(sa.salt)
        self._integ_key = bytearray(sa.integ_key)
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        if self.enc.name.startswith(("aes-gcm", "aes-gmac")):
            self._aead = AESGCM(bytes(self._cipher_key))
        elif self.enc.name == "chacha20-poly1305":
            self._aead = ChaCha20Poly1305(bytes(self._cipher_key))
        self.seq_max = SEQ64_MAX if sa.esn else SEQ32_MAX
        self.next_seq = sa.seq
        self.ip_id = 0
        self.replay: ReplayWindow | None = None
        if self.direction is Direction.OUT:
            self.stats = SAStats(seq=sa.seq)
            if sa.seq > self.seq_max:
                self.stats.flags |= SAFlag.SEQ_EXHAUSTED
        else:
            # SA.seq on an inbound SA is the first number expected: the window
            # starts just below it (an SA resumed mid-stream, or near 2^32).
            self.replay = ReplayWindow(sa.replay_window, sa.esn, top=sa.seq - 1)
            self.stats = SAStats(seq=self.replay.top)
        self.src = sa.src.packed
        self.dst = sa.dst.packed

    def wipe(self) -> None:
        """Zero the key copies we own and drop the cipher objects."""
        for buf in (self._cipher_key, self._salt, self._integ_key):
            buf[:] = bytes(len(buf))
        self._aead = None

    # -- crypto ---------------------------------------------------------------

    def _aad(self, seq: int) -> bytes:
        lo = struct.pack("!I", seq & SEQ32_MAX)
        return self.spi_bytes + (struct.pack("!I", seq >> 32) if self.sa.esn else b"") + lo

    def _hmac(self, data: bytes, seq: int) -> bytes:
        assert self.integ is not None
        h = crypto_hmac.HMAC(bytes(self._integ_key), _HASHES[self.integ.hash]())
        h.update(data)
        if self.sa.esn:
            # RFC 4303 3.3.2.1: the high half is authenticated, not sent.
            h.update(struct.pack("!I", seq >> 32))
        return h.finalize()[: self.icv_len]

    def _cbc(self, iv: bytes, encrypt: bool):
        cipher = Cipher(algorithms.AES(bytes(self._cipher_key)), modes.CBC(iv))
        return cipher.encryptor() if encrypt else cipher.decryptor()

    def seal(self, seq: int, plaintext: bytes) -> bytes:
        """ESP header + IV + ciphertext + ICV for payload||trailer."""
        hdr = self.spi_bytes + struct.pack("!I", seq & SEQ32_MAX)
        name = self.enc.name
        if self._aead is not None:
            iv = struct.pack("!Q", seq)
            nonce = bytes(self._salt) + iv
            if name.startswith("aes-gmac"):
                tag = self._aead.encrypt(nonce, b"", self._aad(seq) + iv + plaintext)
                return hdr + iv + plaintext + tag
            return hdr + iv + self._aead.encrypt(nonce, plaintext, self._aad(seq))
        if name.startswith("aes-cbc"):
            iv = os.urandom(16)
            enc = self._cbc(iv, True)
            body = iv + enc.update(plaintext) + enc.finalize()
        else:  # null
            body = plaintext
        return hdr + body + self._hmac(hdr + body, seq)

    def open(self, seq: int, esp: bytes) -> bytes | None:
        """Verify and decrypt a whole ESP packet (header..ICV): payload||trailer, or None."""
        iv_len = self.enc.iv_len
        iv = esp[8:8 + iv_len]
        ct = esp[8 + iv_len:len(esp) - self.icv_len]
        icv = esp[len(esp) - self.icv_len:]
        name = self.enc.name
        if self._aead is not None:
            nonce = bytes(self._salt) + iv
            try:
                if name.startswith("aes-gmac"):
                    self._aead.decrypt(nonce, icv, self._aad(seq) + iv + ct)
                    return ct
                return self._aead.decrypt(nonce, ct + icv, self._aad(seq))
            except InvalidTag:
                return None
        if not _hmac.compare_digest(self._hmac(esp[:len(esp) - self.icv_len], seq), icv):
            return None
        if name.startswith("aes-cbc"):
            dec = self._cbc(iv, False)
            return dec.update(ct) + dec.finalize()
        return ct

    # -- lifetimes --------------------------------------------------------------

    def _check_hard_packets(self) -> None:
        """Before any work: the hard flag, or the packet limit already reached."""
        lt, st = self.sa.lifetime, self.stats
        if st.flags & SAFlag.HARD_EXPIRED:
            raise Drop(Status.HARD_EXPIRED)
        if lt.hard_packets and st.packets >= lt.hard_packets:
            st.flags |= SAFlag.HARD_EXPIRED
            raise Drop(Status.HARD_EXPIRED)

    def _check_hard_bytes(self, length: int) -> None:
        """Once the inner packet's length is known: would it pass the byte limit?"""
        lt, st = self.sa.lifetime, self.stats
        if lt.hard_bytes and st.bytes + length > lt.hard_bytes:
            st.flags |= SAFlag.HARD_EXPIRED
            raise Drop(Status.HARD_EXPIRED)

    def _count(self, length: int) -> None:
        lt, st = self.sa.lifetime, self.stats
        st.packets += 1
        st.bytes += length
        if (lt.soft_packets and st.packets >= lt.soft_packets) or \
                (lt.soft_bytes and st.bytes >= lt.soft_bytes):
            st.flags |= SAFlag.SOFT_EXPIRED

    # -- outbound -------------------------------------------------------------

    def outbound(self, pkt: bytes, slot_size: int) -> bytes:
        """Encapsulate one IP packet; raises Drop."""
        sa = self.sa
        self._outbound_allowed()
        try:
            info = iphdr.parse_ip(pkt, iphdr.EXT_OUTBOUND, exact=False)
        except MalformedPacket:
            raise Drop(Status.MALFORMED) from None
        pkt = pkt[:info.total_len]      # bytes past the IP total length are not the packet's
        self._check_hard_bytes(len(pkt))

        if sa.mode is Mode.TUNNEL:
            payload = pkt
            nh = iphdr.PROTO_IPIP if info.version == 4 else iphdr.PROTO_IPV6
        else:
            payload = pkt[info.hdr_len:]
            nh = info.proto
        pad_len = -(len(payload) + 2) % self.enc.block
        trailer = bytes(range(1, pad_len + 1)) + bytes((pad_len, nh))
        seq = self.next_seq
        esp = self.seal(seq, payload + trailer)

        proto = iphdr.PROTO_UDP if sa.udp_encap else iphdr.PROTO_ESP
        if sa.mode is Mode.TUNNEL:
            out = self._tunnel_header(info, esp, proto)
        else:
            out = self._transport_header(pkt, info, esp, proto)
        return self._outbound_commit(pkt, out, seq, slot_size)

    def _outbound_allowed(self) -> None:
        """Raise the Drop an SA past its hard lifetime or its last sequence number gives (ESP and AH)."""
        st = self.stats
        if st.flags & SAFlag.HARD_EXPIRED:
            raise Drop(Status.HARD_EXPIRED)
        if st.flags & SAFlag.SEQ_EXHAUSTED or self.next_seq > self.seq_max:
            st.flags |= SAFlag.SEQ_EXHAUSTED
            raise Drop(Status.SEQ_EXHAUSTED)
        self._check_hard_packets()

    def _outbound_commit(self, pkt: bytes, out: bytes, seq: int, slot_size: int,
                         spends_id: bool | None = None) -> bytes:
        """``out`` must fit the slot and the 16-bit length field (IPv4 total, IPv6 payload) that describes
        it; only then are the sequence number and the IPv4 ID spent, so a dropped packet burns neither
        (ESP and AH).  The ID counter is the tunnel's outer header's unless ``spends_id`` says (AH
        transport gives it to a packet whose own ID is zero)."""
        if len(out) > slot_size or len(out) > (0xFFFF if out[0] >> 4 == 4 else 40 + 0xFFFF):
            raise Drop(Status.TOO_BIG)
        sa, st = self.sa, self.stats
        self.next_seq = seq + 1
        if (sa.mode is Mode.TUNNEL and sa.src.version == 4) if spends_id is None else spends_id:
            self.ip_id = (self.ip_id + 1) & 0xFFFF
        if seq >= self.seq_max:
            st.flags |= SAFlag.SEQ_EXHAUSTED
        st.seq = self.next_seq
        self._count(len(pkt))
        return out

    def _l4(self, src: bytes, dst: bytes, esp: bytes) -> bytes:
        if not self.sa.udp_encap:
            return esp
        # RFC 3948: checksum 0 over IPv4; IPv6 (RFC 8200) requires a real one.
        return iphdr.build_udp(src, dst, self.sa.sport, self.sa.dport, esp, checksum=len(src) == 16) + esp

    def _tunnel_header(self, inner: iphdr.IPInfo, esp: bytes, proto: int) -> bytes:
        sa = self.sa
        dscp = (inner.tos >> 2) if sa.dscp is None else sa.dscp
        tos = (dscp << 2) | iphdr.ecn_encap(inner.tos & 3, sa.ecn)
        l4 = self._l4(self.src, self.dst, esp)
        if sa.src.version == 4:
            if sa.df == "copy":
                df = bool(inner.frag & iphdr.IPV4_DF) if inner.version == 4 else True
            else:
                df = sa.df == "set"
            hdr = iphdr.build_ipv4(self.src, self.dst, proto, len(l4), tos, self.ip_id, sa.ttl, df)
        else:
            flow = inner.flow if sa.flowlabel == "copy" and inner.version == 6 else 0
            hdr = iphdr.build_ipv6(self.src, self.dst, proto, len(l4), tos, flow, sa.ttl)
        return hdr + l4

    def _transport_header(self, pkt: bytes, info: iphdr.IPInfo, esp: bytes, proto: int) -> bytes:
        hdr = bytearray(pkt[:info.hdr_len])
        hdr[info.proto_off] = proto
        l4 = self._l4(info.src, info.dst, esp)
        if info.version == 4:
            struct.pack_into("!H", hdr, 2, len(hdr) + len(l4))
            iphdr.fix_ipv4_checksum(hdr)
        else:
            struct.pack_into("!H", hdr, 4, len(hdr) - 40 + len(l4))
        return bytes(hdr) + l4

    # -- inbound --------------------------------------------------------------

    def inbound(self, pkt: bytes, outer: iphdr.IPInfo, esp_off: int) -> bytes:
        """Decapsulate one located ESP packet; raises Drop."""
        sa, st = self.sa, self.stats
        assert self.replay is not None
        self._check_hard_packets()
        esp = pkt[esp_off:]
        body = len(esp) - 8 - self.enc.iv_len - self.icv_len
        if body < 2 or (self.enc.block == 16 and body % 16):
            raise Drop(Status.MALFORMED)

        seq = self.replay.check(struct.unpack_from("!I", esp, 4)[0])
        if seq is None:
            raise Drop(Status.REPLAY)
        plain = self.open(seq, esp)
        if plain is None:
            raise Drop(Status.AUTH_FAILED)
        if not self.replay.update(seq):
            raise Drop(Status.REPLAY)
        st.seq = self.replay.top

        pad_len, nh = plain[-2], plain[-1]
        if pad_len > len(plain) - 2 or plain[len(plain) - 2 - pad_len:-2] != bytes(range(1, pad_len + 1)):
            raise Drop(Status.PADDING)
        if nh == iphdr.PROTO_NONE:
            raise Drop(Status.DUMMY)
        data = plain[:len(plain) - 2 - pad_len]

        if sa.mode is Mode.TUNNEL:
            out = self._decap_tunnel(data, nh, outer)
        else:
            hdr = bytearray(pkt[:outer.hdr_len])
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

    @staticmethod
    def _decap_tunnel(data: bytes, nh: int, outer: iphdr.IPInfo) -> bytes:
        want = {iphdr.PROTO_IPIP: 4, iphdr.PROTO_IPV6: 6}.get(nh)
        if want is None or not data or data[0] >> 4 != want:
            raise Drop(Status.MALFORMED)
        try:
            inner = iphdr.parse_ip(data, frozenset(), exact=False)
        except MalformedPacket:
            raise Drop(Status.MALFORMED) from None
        out = bytearray(data[:inner.total_len])   # the rest is TFC padding
        new_ecn = iphdr.ecn_decap(outer.tos & 3, inner.tos & 3)
        if new_ecn is None:
            raise Drop(Status.ECN)
        if new_ecn != inner.tos & 3:
            iphdr.set_tos(out, (inner.tos & ~3) | new_ecn)
        return bytes(out)

    def _check_selectors(self, pkt: bytes) -> None:
        sa = self.sa
        if not sa.local_ts and not sa.remote_ts:
            return
        try:
            info = iphdr.parse_ip(pkt, frozenset(), exact=True)
        except MalformedPacket:
            raise Drop(Status.MALFORMED) from None
        proto, sport, dport = iphdr.transport_ports(pkt, info)
        if not (_ts_match(sa.remote_ts, info.src, proto, sport) and _ts_match(sa.local_ts, info.dst, proto, dport)):
            raise Drop(Status.SELECTOR)


def _ts_match(selectors: Sequence[TrafficSelector], addr: bytes, proto: int, port: int | None) -> bool:
    if not selectors:
        return True
    ip = ipaddress.ip_address(addr)
    # Protocols without ports (ICMP included: type/code are not checked)
    # only fit selectors that allow every port, which fails closed.
    return any(ts.contains(ip, proto, port) for ts in selectors)


def locate_esp(pkt: bytes) -> tuple[iphdr.IPInfo, int, int]:
    """Find the ESP header in an outer packet: (outer header info, ESP offset, ESP end).

    The end is the IP total length, or the UDP length when encapsulated;
    bytes after it (link padding) are not part of the packet.  Raises Drop
    with NOT_ESP, FRAGMENT or MALFORMED (all engine-wide).
    """
    try:
        info = iphdr.parse_ip(pkt, iphdr.EXT_INBOUND, exact=False)
    except MalformedPacket:
        raise Drop(Status.MALFORMED) from None
    off, end = info.hdr_len, info.total_len
    frag = info.frag & (iphdr.IPV4_MF | iphdr.IPV4_OFFSET_MASK)
    if info.proto == iphdr.PROTO_ESP:
        if frag:
            raise Drop(Status.FRAGMENT)
    elif info.proto == iphdr.PROTO_UDP:
        if info.frag & iphdr.IPV4_OFFSET_MASK:
            raise Drop(Status.NOT_ESP)      # a later fragment: no ports to tell by
        if off + 8 > end:
            raise Drop(Status.MALFORMED)
        sport, dport, ulen = struct.unpack_from("!HHH", pkt, off)
        if NAT_T_PORT not in (sport, dport):
            raise Drop(Status.NOT_ESP)
        if not frag:
            # A first fragment's UDP length covers data not in this packet.
            if ulen < 8 or ulen > end - off:
                raise Drop(Status.MALFORMED)
            end = off + ulen
        off += 8
        payload = pkt[off:end]
        if payload == b"\xff" or payload[:4] == b"\x00\x00\x00\x00":
            raise Drop(Status.NOT_ESP)   # NAT keepalive (RFC 3948 2.3) / IKE (non-ESP marker)
        if frag:
            raise Drop(Status.FRAGMENT)
    else:
        # Includes an IPv6 Fragment header: only IPv4 fragments are recognised.
        raise Drop(Status.NOT_ESP)
    if off + 8 > end:
        raise Drop(Status.MALFORMED)
    return info, off, end
