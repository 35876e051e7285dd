"""IKEv2 cryptography: PRFs, prf+, key exchange groups, the key schedule and SK payload protection.

RFC 7296 §2.13-2.17 (prf+, SKEYSEED, SK_*, KEYMAT), RFC 5282 (AES-GCM in the SK
payload), RFC 7634 (ChaCha20-Poly1305), RFC 5903 (ECP groups), RFC 8031
(Curve25519/448), RFC 3526 (MODP group 14).  Symmetric primitives come from
``cryptography`` and the standard library (hashlib's OpenSSL hashes under the PRF's
HMAC, hmac for the SK integrity checks); nothing here logs or returns
key material except through the objects the caller asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x448, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from control.ike.constants import DhGroup, Encr, Integ, PayloadType, Prf
from control.ike.message import HEADER_LEN, Message
from control.ike.payload_chain import parse_payloads, serialize_payloads
from control.ike.payloads import ParseError, Payload, SKPayload


class CryptoError(ParseError):
    """A peer's key exchange value or protected payload does not verify (a subtype of ParseError
    so the manager drops such messages through the same path as malformed ones)."""


# -- PRF and prf+ --------------------------------------------------------------------

PRF_HASH: dict[int, str] = {
    Prf.HMAC_SHA1: "sha1",
    Prf.HMAC_SHA2_256: "sha256",
    Prf.HMAC_SHA2_384: "sha384",
    Prf.HMAC_SHA2_512: "sha512",
}


_PRF_LEN: dict[int, int] = {alg: hashlib.new(name).digest_size for alg, name in PRF_HASH.items()}
_BYTE = [bytes([n]) for n in range(256)]

# HMAC (RFC 2104) over hashlib's OpenSSL hashes: H(K ^ opad | H(K ^ ipad | data)), the key padded to
# the hash's block size (hashed first when longer).  One-shot HMAC in OpenSSL 3 (hmac.digest, EVP_Q_mac)
# fetches the digest and builds a MAC context per call, and cost about twice this construction for the
# short inputs IKE uses; tests/unit/test_ike_crypto.py checks it against cryptography's HMAC (every PRF,
# keys shorter and longer than the block).
_PRF_NEW = {alg: getattr(hashlib, name) for alg, name in PRF_HASH.items()}
_PRF_BLOCK: dict[int, int] = {alg: hashlib.new(name).block_size for alg, name in PRF_HASH.items()}
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _hmac_keyed(alg: int, key: bytes) -> tuple[Any, Any]:
    """The inner and outer hash contexts of HMAC(key), keyed and ready for ``copy()``."""
    new, block = _PRF_NEW[alg], _PRF_BLOCK[alg]
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    return new(key.translate(_IPAD)), new(key.translate(_OPAD))


def prf(alg: int, key: bytes, data: bytes) -> bytes:
    new, block = _PRF_NEW[alg], _PRF_BLOCK[alg]
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    inner = new(key.translate(_IPAD))
    inner.update(data)
    return new(key.translate(_OPAD) + inner.digest()).digest()


class KeyedPrf:
    """prf(key, .) for a key used again and again (the PSK's "Key Pad for IKEv2" key): the keyed
    inner and outer contexts are built once and copied per call."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, alg: int, key: bytes):
        self._inner, self._outer = _hmac_keyed(alg, key)

    def __call__(self, data: bytes) -> bytes:
        inner, outer = self._inner.copy(), self._outer.copy()
        inner.update(data)
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:          # holds key material
        return "KeyedPrf(<redacted>)"


def prf_len(alg: int) -> int:
    return _PRF_LEN[alg]


def prf_plus(alg: int, key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 §2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); at most 255 blocks."""
    if length > 255 * _PRF_LEN[alg]:
        raise ValueError("prf+ cannot produce that much key material")
    # the keyed contexts are built once and copied per block, instead of keying HMAC for every block
    k_in, k_out = _hmac_keyed(alg, key)
    blocks, t = [], b""
    for n in range(1, -(-length // _PRF_LEN[alg]) + 1):
        inner, outer = k_in.copy(), k_out.copy()
        inner.update(t + seed + _BYTE[n])
        outer.update(inner.digest())
        t = outer.digest()
        blocks.append(t)
    return b"".join(blocks)[:length]


# -- key exchange ----------------------------------------------------------------------

# RFC 3526 group 14: p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ), g = 2
MODP_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)

_ECP = {DhGroup.ECP_256: (ec.SECP256R1, 32), DhGroup.ECP_384: (ec.SECP384R1, 48), DhGroup.ECP_521: (ec.SECP521R1, 66)}
# plain ints: attribute access on an enum class goes through EnumType's slow __getattr__ hook
_MODP_2048, _X25519, _X448 = int(DhGroup.MODP_2048), int(DhGroup.CURVE25519), int(DhGroup.CURVE448)
_SK, _CHACHA20_POLY1305 = int(PayloadType.SK), int(Encr.CHACHA20_POLY1305)

# X25519PrivateKey.generate / X25519PublicKey.from_public_bytes import the backend and ask it whether
# X25519 is supported on every call; ask once here and call the same OpenSSL-backed constructors.
if hasattr(x25519, "rust_openssl") \
        and x25519.X25519PrivateKey.generate().__class__ is x25519.rust_openssl.x25519.X25519PrivateKey:
    _x25519_generate = x25519.rust_openssl.x25519.generate_key
    _x25519_public = x25519.rust_openssl.x25519.from_public_bytes
else:           # another cryptography layout: the public API, checks and all
    _x25519_generate = x25519.X25519PrivateKey.generate
    _x25519_public = x25519.X25519PublicKey.from_public_bytes

# FIPS 203 ML-KEM: group -> (private key class, public key class, encapsulation key bytes, ciphertext bytes).
# ``cryptography`` has ML-KEM-768 since 47.0 and ML-KEM-1024 later; 51 has no ML-KEM-512.  A group is
# offered only where the installed wheel has its classes and its backend can generate a key.
_MLKEM_SIZES = {DhGroup.MLKEM512: ("512", 800, 768), DhGroup.MLKEM768: ("768", 1184, 1088),
                DhGroup.MLKEM1024: ("1024", 1568, 1568)}


def _mlkem_available() -> dict[int, tuple[Any, Any, int, int]]:
    found = {}
    for group, (level, ek_len, ct_len) in _MLKEM_SIZES.items():
        priv, pub = getattr(mlkem, f"MLKEM{level}PrivateKey", None), getattr(mlkem, f"MLKEM{level}PublicKey", None)
        if priv is None or pub is None:
            continue
        try:
            priv.generate()
        except UnsupportedAlgorithm:
            continue
        found[group] = (priv, pub, ek_len, ct_len)
    return found


_MLKEM = _mlkem_available()
MLKEM_GROUPS = tuple(sorted(_MLKEM))

SUPPORTED_GROUPS = (DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.ECP_521, DhGroup.CURVE25519,
                    DhGroup.CURVE448, *MLKEM_GROUPS)


class KeyExchange:
    """One ephemeral key pair of a group: ``public`` is the KE payload's data, ``shared`` the g^ir.

    ML-KEM is no Diffie-Hellman: the initiator's KE carries an encapsulation key, the responder's the
    ciphertext it encapsulated to that key.  So a responder's KeyExchange (``responder=True``) of an
    ML-KEM group has its ``public`` only once ``shared`` has run on the initiator's value."""

    def __init__(self, group: int, *, responder: bool = False):
        self.group = group
        self.responder = responder
        if group in _MLKEM:
            self._key = None if responder else _MLKEM[group][0].generate()
            self.public = b"" if responder else self._key.public_key().public_bytes_raw()
        elif group == _MODP_2048:
            # FFDH through cryptography is deprecated there; Python's pow does the group arithmetic.
            # 512-bit exponents: twice the group's ~112-bit strength with a wide margin (RFC 3526 §8).
            self._x = secrets.randbits(512) | (1 << 511)
            self.public = pow(2, self._x, MODP_2048_P).to_bytes(256, "big")
        elif group in _ECP:
            curve, size = _ECP[group]
            self._key = ec.generate_private_key(curve())
            nums = self._key.public_key().public_numbers()
            # RFC 5903 §7: x || y, each padded to the field size, no point-format octet
            self.public = nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
        elif group == _X25519:
            self._key = _x25519_generate()
            self.public = self._key.public_key().public_bytes_raw()
        elif group == _X448:
            self._key = x448.X448PrivateKey.generate()
            self.public = self._key.public_key().public_bytes_raw()
        else:
            raise ValueError(f"unsupported key exchange group {group}")

    @classmethod
    def from_private(cls, group: int, private: bytes) -> KeyExchange:
        """A fixed key pair, for known-answer tests (X25519/X448 raw keys, ECP scalar, MODP exponent)."""
        self = cls.__new__(cls)
        self.group = group
        self.responder = False
        if group in _MLKEM:         # the 64-byte seed d || z of FIPS 203 ML-KEM.KeyGen_internal
            self._key = _MLKEM[group][0].from_seed_bytes(private)
            self.public = self._key.public_key().public_bytes_raw()
        elif group == _MODP_2048:
            self._x = int.from_bytes(private, "big")
            self.public = pow(2, self._x, MODP_2048_P).to_bytes(256, "big")
        elif group in _ECP:
            curve, size = _ECP[group]
            self._key = ec.derive_private_key(int.from_bytes(private, "big"), curve())
            nums = self._key.public_key().public_numbers()
            self.public = nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
        elif group == _X25519:
            self._key = x25519.X25519PrivateKey.from_private_bytes(private)
            self.public = self._key.public_key().public_bytes_raw()
        elif group == _X448:
            self._key = x448.X448PrivateKey.from_private_bytes(private)
            self.public = self._key.public_key().public_bytes_raw()
        else:
            raise ValueError(f"unsupported key exchange group {group}")
        return self

    def shared(self, peer: bytes) -> bytes:
        """g^ir from the peer's KE data; a value of the wrong size or off the group raises CryptoError."""
        g = self.group
        if g in _MLKEM:
            return self._kem_shared(peer)
        try:
            if g == _MODP_2048:
                if len(peer) != 256:
                    raise CryptoError("MODP-2048 public value must be 256 bytes")
                y = int.from_bytes(peer, "big")
                if not 1 < y < MODP_2048_P - 1:
                    raise CryptoError("MODP-2048 public value out of range")
                return pow(y, self._x, MODP_2048_P).to_bytes(256, "big")
            if g in _ECP:
                curve, size = _ECP[g]
                if len(peer) != 2 * size:
                    raise CryptoError(f"ECP public value must be {2 * size} bytes")
                pub = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b"\x04" + peer)
                return self._key.exchange(ec.ECDH(), pub)
            if g == _X25519:
                if len(peer) != 32:
                    raise CryptoError("Curve25519 public value must be 32 bytes")
                return self._key.exchange(_x25519_public(peer))
            if len(peer) != 56:
                raise CryptoError("Curve448 public value must be 56 bytes")
            return self._key.exchange(x448.X448PublicKey.from_public_bytes(peer))
        except ValueError as exc:
            if isinstance(exc, CryptoError):
                raise
            # off-curve point, or an all-zero X25519/X448 result (small-order peer value)
            raise CryptoError(f"invalid key exchange value for group {g}") from None


    def _kem_shared(self, peer: bytes) -> bytes:
        _, public_cls, ek_len, ct_len = _MLKEM[self.group]
        if self.responder:
            if len(peer) != ek_len:
                raise CryptoError(f"ML-KEM encapsulation key must be {ek_len} bytes")
            try:
                ek = public_cls.from_public_bytes(peer)
                shared, self.public = ek.encapsulate()
            except ValueError:
                # FIPS 203 §7.2's modulus check: a key with coefficients >= q is refused
                raise CryptoError("invalid ML-KEM encapsulation key") from None
            return shared
        if len(peer) != ct_len:
            raise CryptoError(f"ML-KEM ciphertext must be {ct_len} bytes")
        try:
            # decapsulation never fails on a well-sized ciphertext (implicit rejection, FIPS 203 §6.3):
            # a forged one yields a key the peer does not have, and the next ICV check fails
            return self._key.decapsulate(peer)
        except ValueError:
            raise CryptoError("invalid ML-KEM ciphertext") from None



# -- transforms ------------------------------------------------------------------------

@dataclass(frozen=True)
class EncrInfo:
    aead: bool
    salt: int           # bytes of salt taken from the end of the key (AEAD)
    iv: int
    icv: int            # AEAD tag length (0 for CBC)
    block: int          # plaintext alignment
    key_lengths: tuple[int, ...]   # bits; () = fixed, no Key Length attribute


ENCR: dict[int, EncrInfo] = {
    Encr.AES_CBC: EncrInfo(False, 0, 16, 0, 16, (128, 192, 256)),
    Encr.AES_GCM_8: EncrInfo(True, 4, 8, 8, 1, (128, 192, 256)),
    Encr.AES_GCM_12: EncrInfo(True, 4, 8, 12, 1, (128, 192, 256)),
    Encr.AES_GCM_16: EncrInfo(True, 4, 8, 16, 1, (128, 192, 256)),
    Encr.CHACHA20_POLY1305: EncrInfo(True, 4, 8, 16, 1, ()),
}


@dataclass(frozen=True)
class IntegInfo:
    hash: str
    key_len: int
    icv_len: int


INTEG: dict[int, IntegInfo] = {
    Integ.HMAC_SHA1_96: IntegInfo("sha1", 20, 12),
    Integ.HMAC_SHA2_256_128: IntegInfo("sha256", 32, 16),
    Integ.HMAC_SHA2_384_192: IntegInfo("sha384", 48, 24),
    Integ.HMAC_SHA2_512_256: IntegInfo("sha512", 64, 32),
}


def encr_key_len(encr: int, key_bits: int | None) -> int:
    """Key material bytes an encryption transform draws from prf+ (cipher key plus salt)."""
    info = ENCR[encr]
    bits = key_bits if key_bits is not None else 256
    return bits // 8 + info.salt


@dataclass(frozen=True)
class IkeSuite:
    """The algorithms one IKE SA uses (a chosen IKE proposal)."""

    encr: int
    key_bits: int | None
    prf: int
    integ: int          # Integ.NONE with an AEAD
    dh: int
    addke: tuple[int, ...] = ()     # RFC 9370: the additional key exchanges' methods, in exchange order


# -- key schedule ----------------------------------------------------------------------

@dataclass
class IkeKeys:
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:          # never print keys
        return "IkeKeys(<redacted>)"


def skeyseed(prf_alg: int, ni: bytes, nr: bytes, g_ir: bytes) -> bytes:
    return prf(prf_alg, ni + nr, g_ir)


def _ike_keys(suite: IkeSuite, seed_key: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), sized by suite."""
    plen = prf_len(suite.prf)
    alen = INTEG[suite.integ].key_len if suite.integ else 0
    elen = encr_key_len(suite.encr, suite.key_bits)
    km = prf_plus(suite.prf, seed_key, ni + nr + spi_i + spi_r, 3 * plen + 2 * alen + 2 * elen)
    parts, pos = [], 0
    for n in (plen, alen, alen, elen, elen, plen, plen):
        parts.append(km[pos:pos + n])
        pos += n
    return IkeKeys(*parts)


def derive_ike_keys(suite: IkeSuite, ni: bytes, nr: bytes, g_ir: bytes, spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """RFC 7296 §2.14: SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr)."""
    return _ike_keys(suite, skeyseed(suite.prf, ni, nr, g_ir), ni, nr, spi_i, spi_r)


def derive_rekeyed_ike_keys(old_prf: int, old_sk_d: bytes, suite: IkeSuite, ni: bytes, nr: bytes, g_ir: bytes,
                            spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """RFC 7296 §2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the *old* SA's PRF; the
    SK_* then come from prf+ of the *new* suite over Ni | Nr | SPIi | SPIr of the new SA."""
    return _ike_keys(suite, prf(old_prf, old_sk_d, g_ir + ni + nr), ni, nr, spi_i, spi_r)


def child_keymat(prf_alg: int, sk_d: bytes, ni: bytes, nr: bytes, enc_len: int, integ_len: int,
                 g_ir: bytes = b"") -> tuple[bytes, bytes, bytes, bytes]:
    """RFC 7296 §2.17: KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr), taken as
    (initiator->responder encryption, integrity, responder->initiator encryption, integrity)."""
    km = prf_plus(prf_alg, sk_d, g_ir + ni + nr, 2 * (enc_len + integ_len))
    e1, a1 = km[:enc_len], km[enc_len:enc_len + integ_len]
    rest = km[enc_len + integ_len:]
    return e1, a1, rest[:enc_len], rest[enc_len:]


# -- SK payload protection ---------------------------------------------------------------

class SKCipher:
    """Protects and unprotects SK payloads in one direction (keys for one sender)."""

    def __init__(self, suite: IkeSuite, enc_key: bytes, integ_key: bytes):
        self.info = ENCR[suite.encr]
        self.encr = suite.encr
        self.integ = INTEG[suite.integ] if suite.integ else None
        if self.info.aead == (self.integ is not None):
            raise ValueError("an AEAD takes no integrity transform; a plain cipher needs one")
        self._key = enc_key[:len(enc_key) - self.info.salt]
        self._salt = enc_key[len(enc_key) - self.info.salt:]
        self._integ_key = integ_key
        self._counter = 0
        if suite.encr == _CHACHA20_POLY1305:
            self._aead: AESGCM | ChaCha20Poly1305 | None = ChaCha20Poly1305(self._key)
        elif self.info.aead:
            self._aead = AESGCM(self._key)
        else:
            self._aead = None

    @property
    def overhead(self) -> int:
        """Bytes the SK body adds around the plaintext, padding excluded."""
        return self.info.iv + (self.info.icv if self.info.aead else self.integ.icv_len)  # type: ignore[union-attr]

    def _next_iv(self) -> bytes:
        if self.info.aead:
            # RFC 5282 §3.1: the IV must never repeat under one key; a counter guarantees it
            self._counter += 1
            return struct.pack("!Q", self._counter)
        return os.urandom(self.info.iv)

    def protect(self, msg: Message, inner: list[Payload]) -> bytes:
        """The whole datagram for ``msg`` (header fields) carrying ``inner`` in an SK payload."""
        first, plain = serialize_payloads(inner)
        return self.protect_chain(msg, first, plain)

    def protect_chain(self, msg: Message, first: int, plain: bytes) -> bytes:
        """``protect`` for a payload chain already serialized (``serialize_payloads``' result)."""
        block = self.info.block
        pad = (-(len(plain) + 1)) % block
        plain += bytes(pad) + bytes([pad])
        iv = self._next_iv()
        icv_len = self.info.icv if self.info.aead else self.integ.icv_len  # type: ignore[union-attr]
        sk_len = 4 + len(iv) + len(plain) + icv_len
        total = HEADER_LEN + sk_len
        head = msg.header(_SK, total) + struct.pack("!BBH", first, 0, sk_len)
        if self._aead is not None:
            # RFC 5282 §5.1: AAD is the IKE header through the SK generic payload header
            ct = self._aead.encrypt(self._salt + iv, plain, head)
            return head + iv + ct
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        body = head + iv + enc.update(plain) + enc.finalize()
        icv = hmac.digest(self._integ_key, body, self.integ.hash)[:icv_len]  # type: ignore[union-attr]
        return body + icv

    def unprotect(self, data: bytes, sk: SKPayload) -> list[Payload]:
        """Verify and decrypt the SK payload that ends datagram ``data``; returns the inner payloads."""
        return parse_payloads(sk.first, self.unprotect_plain(data, sk))

    def unprotect_plain(self, data: bytes, sk: SKPayload) -> bytes:
        """``unprotect``'s inner payload chain as bytes (RFC 9242's IntAuth covers them as sent)."""
        body = sk.data
        iv_len = self.info.iv
        icv_len = self.info.icv if self.info.aead else self.integ.icv_len  # type: ignore[union-attr]
        if len(body) < iv_len + icv_len + (1 if self.info.aead else self.info.block):
            raise CryptoError("SK payload too short")
        head = data[:len(data) - len(body)]
        iv, ct = body[:iv_len], body[iv_len:]
        if self._aead is not None:
            try:
                plain = self._aead.decrypt(self._salt + iv, ct, head)
            except InvalidTag:
                raise CryptoError("SK payload failed its integrity check") from None
        else:
            icv = ct[-icv_len:]
            ct = ct[:-icv_len]
            if len(ct) % self.info.block:
                raise CryptoError("SK ciphertext is not a whole number of blocks")
            mac = hmac.digest(self._integ_key, data[:-icv_len], self.integ.hash)[:icv_len]  # type: ignore[union-attr]
            if not hmac.compare_digest(mac, icv):
                raise CryptoError("SK payload failed its integrity check")
            dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            plain = dec.update(ct) + dec.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain):
            raise CryptoError("SK padding length exceeds the plaintext")
        return plain[:len(plain) - pad - 1]

    # -- the same protection around a header the caller builds (RFC 7383 SKF fragments) --------------

    def sealed_len(self, plain_len: int) -> int:
        """Bytes of IV || ciphertext || ICV that ``plain_len`` bytes of payloads become (padding included)."""
        return self.overhead + plain_len + 1 + (-(plain_len + 1)) % self.info.block

    def seal(self, head: bytes, plain: bytes) -> bytes:
        """IV || ciphertext || ICV for ``plain``; ``head`` (every byte before the IV) is authenticated."""
        pad = (-(len(plain) + 1)) % self.info.block
        plain = plain + bytes(pad) + bytes([pad])
        iv = self._next_iv()
        if self._aead is not None:
            return iv + self._aead.encrypt(self._salt + iv, plain, head)
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        body = iv + enc.update(plain) + enc.finalize()
        icv_len = self.integ.icv_len  # type: ignore[union-attr]
        return body + hmac.digest(self._integ_key, head + body, self.integ.hash)[:icv_len]  # type: ignore[union-attr]

    def open(self, head: bytes, body: bytes) -> bytes:
        """Verify and decrypt ``body`` (IV || ciphertext || ICV after ``head``): the plaintext, padding removed.
        Raises CryptoError; the ICV is compared in constant time."""
        iv_len = self.info.iv
        icv_len = self.info.icv if self.info.aead else self.integ.icv_len  # type: ignore[union-attr]
        if len(body) < iv_len + icv_len + (1 if self.info.aead else self.info.block):
            raise CryptoError("encrypted payload too short")
        iv, ct = body[:iv_len], body[iv_len:]
        if self._aead is not None:
            try:
                plain = self._aead.decrypt(self._salt + iv, ct, head)
            except InvalidTag:
                raise CryptoError("encrypted payload failed its integrity check") from None
        else:
            icv, ct = ct[-icv_len:], ct[:-icv_len]
            if len(ct) % self.info.block:
                raise CryptoError("ciphertext is not a whole number of blocks")
            mac = hmac.digest(self._integ_key, head + body[:-icv_len], self.integ.hash)[:icv_len]  # type: ignore[union-attr]
            if not hmac.compare_digest(mac, icv):
                raise CryptoError("encrypted payload failed its integrity check")
            dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            plain = dec.update(ct) + dec.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain):
            raise CryptoError("padding length exceeds the plaintext")
        return plain[:len(plain) - pad - 1]


def derive_addke_keys(suite: IkeSuite, keys: IkeKeys, ni: bytes, nr: bytes, shared: bytes, spi_i: bytes,
                      spi_r: bytes) -> IkeKeys:
    """RFC 9370 §2.2.2, after each additional key exchange n: SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr),
    and the SK_* from prf+(SKEYSEED(n), Ni | Nr | SPIi | SPIr); the nonces and SPIs are IKE_SA_INIT's."""
    return derive_rekeyed_ike_keys(suite.prf, keys.sk_d, suite, ni, nr, shared, spi_i, spi_r)
