"""IKEv1 key schedule and message protection (RFC 2409 §5, appendix B).

The PRF is HMAC with the negotiated hash (control.ike.crypto's); SKEYID and its three children, the
cipher key expanded from SKEYID_e when it is too short, the phase 1 IV and the per-exchange IVs, and
AES-CBC over the payload chain.  ``Protection`` holds the keys of one ISAKMP SA; nothing here logs or
returns key material except through the objects asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from control.ike.constants import Prf
from control.ike.crypto import prf
from control.ikev1.codec import DecodeError
from control.ikev1.constants import AuthMethod, P1Hash

HASH_PRF = {P1Hash.SHA1: Prf.HMAC_SHA1, P1Hash.SHA2_256: Prf.HMAC_SHA2_256,
            P1Hash.SHA2_384: Prf.HMAC_SHA2_384, P1Hash.SHA2_512: Prf.HMAC_SHA2_512}
HASH_NAME = {P1Hash.SHA1: "sha1", P1Hash.SHA2_256: "sha256", P1Hash.SHA2_384: "sha384", P1Hash.SHA2_512: "sha512"}
BLOCK = 16                      # AES, the one phase 1 cipher we offer
_ECDSA_PRF = {AuthMethod.ECDSA_256: Prf.HMAC_SHA2_256, AuthMethod.ECDSA_384: Prf.HMAC_SHA2_384,
              AuthMethod.ECDSA_521: Prf.HMAC_SHA2_512}


@dataclass(frozen=True)
class P1Suite:
    """A chosen phase 1 transform."""

    encr: int                   # P1Encr
    key_bits: int
    hash: int                   # P1Hash
    auth: int                   # AuthMethod
    group: int                  # DH group (IANA numbers, the same as IKEv2's)
    lifetime: int               # seconds

    @property
    def prf_id(self) -> int:
        return HASH_PRF[self.hash]

    def prf(self, key: bytes, data: bytes) -> bytes:
        return prf(HASH_PRF[self.hash], key, data)

    def auth_prf(self, key: bytes, data: bytes) -> bytes:
        """The PRF of HASH_I / HASH_R: the negotiated one, but with ECDSA the HMAC of the curve's hash
        (RFC 4754 §7: HMAC-SHA-256 with ECDSA-256, -384 with -384, -512 with -521)."""
        return prf(_ECDSA_PRF.get(self.auth, HASH_PRF[self.hash]), key, data)

    def hash_fn(self, data: bytes) -> bytes:
        return hashlib.new(HASH_NAME[self.hash], data).digest()


@dataclass
class Phase1Keys:
    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes
    enc_key: bytes

    def __repr__(self) -> str:          # never print keys
        return "Phase1Keys(<redacted>)"


def skeyid_psk(suite: P1Suite, psk: bytes, ni: bytes, nr: bytes) -> bytes:
    """RFC 2409 §5: SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    return suite.prf(psk, ni + nr)


def skeyid_sig(suite: P1Suite, ni: bytes, nr: bytes, g_xy: bytes) -> bytes:
    """RFC 2409 §5: for signatures SKEYID = prf(Ni_b | Nr_b, g^xy)."""
    return suite.prf(ni + nr, g_xy)


def derive_phase1(suite: P1Suite, skeyid: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes) -> Phase1Keys:
    """SKEYID_d, _a and _e (RFC 2409 §5) and the cipher key (appendix B: Ka = K1 | K2 ... when SKEYID_e is
    shorter than the key, K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1))."""
    d = suite.prf(skeyid, g_xy + cky_i + cky_r + b"\x00")
    a = suite.prf(skeyid, d + g_xy + cky_i + cky_r + b"\x01")
    e = suite.prf(skeyid, a + g_xy + cky_i + cky_r + b"\x02")
    need = suite.key_bits // 8
    key = e
    if len(e) < need:
        blocks, k = [], b"\x00"
        while sum(map(len, blocks)) < need:
            k = suite.prf(e, k)
            blocks.append(k)
        key = b"".join(blocks)
    return Phase1Keys(skeyid, d, a, e, key[:need])


def phase1_iv(suite: P1Suite, g_xi: bytes, g_xr: bytes) -> bytes:
    """RFC 2409 appendix B: the first phase 1 IV is hash(g^xi | g^xr), cut to the cipher's block."""
    return suite.hash_fn(g_xi + g_xr)[:BLOCK]


def exchange_iv(suite: P1Suite, last_phase1_block: bytes, message_id: int) -> bytes:
    """The IV of a quick mode or informational exchange: hash(last phase 1 CBC block | M-ID)."""
    return suite.hash_fn(last_phase1_block + message_id.to_bytes(4, "big"))[:BLOCK]


def encrypt(key: bytes, iv: bytes, plain: bytes) -> bytes:
    """AES-CBC over the payload chain, zero padding to the block with the pad count in the last byte."""
    pad = (-len(plain)) % BLOCK
    if pad:
        plain = plain + bytes(pad - 1) + bytes([pad])
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(plain) + enc.finalize()


def decrypt(key: bytes, iv: bytes, ct: bytes) -> bytes:
    if not ct or len(ct) % BLOCK:
        raise DecodeError("encrypted body is not a whole number of cipher blocks")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(ct) + dec.finalize()


def hash_i(suite: P1Suite, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sa_i: bytes,
           id_i: bytes) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)."""
    return suite.auth_prf(skeyid, g_xi + g_xr + cky_i + cky_r + sa_i + id_i)


def hash_r(suite: P1Suite, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sa_i: bytes,
           id_r: bytes) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)."""
    return suite.auth_prf(skeyid, g_xr + g_xi + cky_r + cky_i + sa_i + id_r)


def keymat(suite: P1Suite, skeyid_d: bytes, protocol: int, spi: bytes, ni: bytes, nr: bytes, length: int,
           g_qm: bytes = b"") -> bytes:
    """RFC 2409 §5.5: KEYMAT = K1 | K2 | ..., K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b).  ``spi`` is the receiver's."""
    seed = g_qm + bytes([protocol]) + spi + ni + nr
    out, k = b"", b""
    while len(out) < length:
        k = suite.prf(skeyid_d, k + seed)
        out += k
    return out[:length]


def nat_d(suite: P1Suite, cky_i: bytes, cky_r: bytes, ip: bytes, port: int) -> bytes:
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash."""
    return suite.hash_fn(cky_i + cky_r + ip + port.to_bytes(2, "big"))
