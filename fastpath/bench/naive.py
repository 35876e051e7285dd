"""The per-packet Python baseline the benchmarks compare against.

This is what a straightforward Python ESP implementation looks like: one
``cryptography`` call and a few ``bytes`` operations per packet, tunnel mode
over IPv4.  It does the same framing as the engines (outer header, ESP header,
IV from the sequence number, monotonic padding, trailer, ICV) so the ratio
between an engine and this loop is the gain from batching and C, not from
doing less work.  It is deliberately minimal (no selectors, lifetimes or
statistics) to keep the baseline honest: the fastest plausible naive loop.
"""

from __future__ import annotations

import hmac as _hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from cdefs.sa import SA
from fastpath.iphdr import ipv4_checksum


class NaiveESP:
    """Tunnel-mode IPv4 ESP, one packet at a time (AEADs and CBC+HMAC)."""

    def __init__(self, sa: SA):
        self.sa = sa
        alg = sa.enc_alg
        self.alg = alg
        self.aead = None
        if alg.name.startswith("aes-gcm"):
            self.aead = AESGCM(sa.cipher_key)
        elif alg.name == "chacha20-poly1305":
            self.aead = ChaCha20Poly1305(sa.cipher_key)
        elif not alg.name.startswith("aes-cbc"):
            raise ValueError(f"the naive baseline covers AES-GCM, ChaCha20-Poly1305 and AES-CBC, not {alg.name}")
        self.seq = sa.seq
        self.outer = struct.pack("!4s4s", sa.src.packed, sa.dst.packed)
        integ = sa.integ_alg
        self.hash = integ.hash if integ else None
        self.icv_len = sa.icv_len
        self.highest = 0
        self.window = 0
        # Hoisted out of the loop: a fair naive baseline is a tight one.
        self.spi = sa.spi
        self.salt = sa.salt
        self.block = alg.block
        self.cipher_key = sa.cipher_key
        self.integ_key = sa.integ_key

    def encrypt(self, inner: bytes) -> bytes:
        seq = self.seq
        self.seq += 1
        pad = (-(len(inner) + 2)) % self.block
        trailer = bytes(range(1, pad + 1)) + bytes((pad, 4))
        esp_hdr = struct.pack("!II", self.spi, seq & 0xFFFFFFFF)
        if self.aead is not None:
            iv = struct.pack("!Q", seq)
            body = iv + self.aead.encrypt(self.salt + iv, inner + trailer, esp_hdr)
        else:
            iv = os.urandom(16)
            enc = Cipher(algorithms.AES(self.cipher_key), modes.CBC(iv)).encryptor()
            ct = enc.update(inner + trailer) + enc.finalize()
            icv = _hmac.new(self.integ_key, esp_hdr + iv + ct, self.hash).digest()[: self.icv_len]
            body = iv + ct + icv
        total = 20 + 8 + len(body)
        hdr = struct.pack("!BBHHHBBH", 0x45, inner[1], total, seq & 0xFFFF, 0x4000, 64, 50, 0) + self.outer
        hdr = hdr[:10] + struct.pack("!H", ipv4_checksum(hdr)) + hdr[12:]
        return hdr + esp_hdr + body

    def decrypt(self, packet: bytes) -> bytes | None:
        """The inbound checks an ESP receiver owes (RFC 4303 3.4), one packet at a time."""
        ihl = (packet[0] & 0x0F) * 4
        if packet[0] >> 4 != 4 or packet[9] != 50 or int.from_bytes(packet[2:4], "big") != len(packet):
            return None
        esp = packet[ihl:]
        spi, seq = struct.unpack_from("!II", esp)
        if spi != self.spi or seq == 0:
            return None
        # 64-packet sliding window: pre-check, authenticate, then update.
        if seq <= self.highest and (self.highest - seq >= 64 or self.window >> (self.highest - seq) & 1):
            return None
        if self.aead is not None:
            iv = esp[8:16]
            try:
                plain = self.aead.decrypt(self.salt + iv, esp[16:], esp[:8])
            except Exception:  # noqa: BLE001 - InvalidTag: count as a drop, as an engine would
                return None
        else:
            body, icv = esp[:-self.icv_len], esp[-self.icv_len:]
            if not _hmac.compare_digest(_hmac.new(self.integ_key, body, self.hash).digest()[: self.icv_len], icv):
                return None
            dec = Cipher(algorithms.AES(self.cipher_key), modes.CBC(esp[8:24])).decryptor()
            plain = dec.update(body[24:]) + dec.finalize()
        if seq > self.highest:
            self.window = ((self.window << (seq - self.highest)) | 1) & 0xFFFFFFFFFFFFFFFF
            self.highest = seq
        else:
            self.window |= 1 << (self.highest - seq)
        pad, nh = plain[-2], plain[-1]
        end = len(plain) - 2 - pad
        if end < 20 or plain[end:-2] != bytes(range(1, pad + 1)) or nh != 4 or plain[0] >> 4 != 4:
            return None
        inner = plain[:end]
        if int.from_bytes(inner[2:4], "big") > len(inner):
            return None
        return inner
