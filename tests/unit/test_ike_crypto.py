"""IKE cryptography against things we did not write: RFC vectors and independent constructions
built here from ``cryptography`` (HKDF-Expand is prf+; AES-GCM per RFC 5282 for the SK payload)."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from control.ike.constants import DhGroup, Encr, ExchangeType, Flag, Integ, Prf
from control.ike.crypto import (
    MODP_2048_P,
    CryptoError,
    IkeSuite,
    KeyedPrf,
    KeyExchange,
    SKCipher,
    child_keymat,
    derive_ike_keys,
    prf,
    prf_plus,
)
from control.ike.message import Message
from control.ike.payloads import IDPayload, NoncePayload, NotifyPayload, SKPayload

HASHES = {Prf.HMAC_SHA1: hashes.SHA1, Prf.HMAC_SHA2_256: hashes.SHA256, Prf.HMAC_SHA2_384: hashes.SHA384,
          Prf.HMAC_SHA2_512: hashes.SHA512}

# RFC 4231 test cases 1 and 2 (HMAC-SHA-256/384/512)
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", {
        Prf.HMAC_SHA2_256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        Prf.HMAC_SHA2_384: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
                           "faea9ea9076ede7f4af152e8b2fa9cb6",
        Prf.HMAC_SHA2_512: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                           "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"}),
    (b"Jefe", b"what do ya want for nothing?", {
        Prf.HMAC_SHA2_256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        Prf.HMAC_SHA2_384: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                           "8e2240ca5e69e2c78b3239ecfab21649",
        Prf.HMAC_SHA2_512: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                           "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"}),
]


@pytest.mark.parametrize("key,data,expected", RFC4231)
def test_prf_rfc4231(key: bytes, data: bytes, expected: dict) -> None:
    for alg, hexval in expected.items():
        assert prf(alg, key, data).hex() == hexval


@settings(max_examples=60, deadline=None)
@given(alg=st.sampled_from(list(HASHES)), key=st.binary(min_size=1, max_size=80), seed=st.binary(max_size=200),
       length=st.integers(1, 600))
def test_prf_plus_is_hkdf_expand(alg: int, key: bytes, seed: bytes, length: int) -> None:
    # RFC 7296 prf+ and RFC 5869 HKDF-Expand are the same construction (T(n) = HMAC(K, T(n-1) | S | n))
    expected = HKDFExpand(HASHES[alg](), length, seed).derive(key)
    assert prf_plus(alg, key, seed, length) == expected


@settings(max_examples=80, deadline=None)
@given(alg=st.sampled_from(list(HASHES)), key=st.binary(max_size=300), data=st.binary(max_size=300))
def test_prf_is_hmac(alg: int, key: bytes, data: bytes) -> None:
    # prf is HMAC built on hashlib (RFC 2104); cryptography's HMAC is the reference, keys longer than
    # the hash's block size (64/128 bytes) included
    ref = c_hmac.HMAC(key, HASHES[alg]())
    ref.update(data)
    expected = ref.finalize()
    assert prf(alg, key, data) == expected
    assert KeyedPrf(alg, key)(data) == expected


def test_prf_plus_limit() -> None:
    with pytest.raises(ValueError):
        prf_plus(Prf.HMAC_SHA1, b"k", b"s", 20 * 255 + 1)


def _hmac(alg: int, key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, HASHES[alg]())
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize("encr,bits,integ,prf_alg", [
    (Encr.AES_GCM_16, 128, Integ.NONE, Prf.HMAC_SHA2_256),
    (Encr.AES_GCM_16, 256, Integ.NONE, Prf.HMAC_SHA2_384),
    (Encr.AES_CBC, 256, Integ.HMAC_SHA2_384_192, Prf.HMAC_SHA2_384),
    (Encr.AES_CBC, 128, Integ.HMAC_SHA2_512_256, Prf.HMAC_SHA2_512),
    (Encr.CHACHA20_POLY1305, None, Integ.NONE, Prf.HMAC_SHA2_256),
])
def test_key_schedule_independent(encr: int, bits: int | None, integ: int, prf_alg: int) -> None:
    ni, nr, gir = os.urandom(32), os.urandom(32), os.urandom(32)
    spi_i, spi_r = os.urandom(8), os.urandom(8)
    suite = IkeSuite(encr, bits, prf_alg, integ, DhGroup.CURVE25519)
    keys = derive_ike_keys(suite, ni, nr, gir, spi_i, spi_r)
    # RFC 7296 §2.14 spelt out with cryptography's HMAC and HKDF-Expand
    seed = _hmac(prf_alg, ni + nr, gir)
    plen = HASHES[prf_alg].digest_size
    alen = {Integ.NONE: 0, Integ.HMAC_SHA2_384_192: 48, Integ.HMAC_SHA2_512_256: 64}[integ]
    elen = (bits or 256) // 8 + (4 if encr != Encr.AES_CBC else 0)
    total = 3 * plen + 2 * alen + 2 * elen
    km = HKDFExpand(HASHES[prf_alg](), total, ni + nr + spi_i + spi_r).derive(seed)
    sizes = [plen, alen, alen, elen, elen, plen, plen]
    parts = [km[sum(sizes[:i]):sum(sizes[:i + 1])] for i in range(7)]
    assert [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr] == parts
    assert "redacted" in repr(keys) and keys.sk_d.hex() not in repr(keys)
    # KEYMAT for a CHILD SA: prf+(SK_d, Ni | Nr), i->r keys first
    e1, a1, e2, a2 = child_keymat(prf_alg, keys.sk_d, ni, nr, 20, 32)
    km2 = HKDFExpand(HASHES[prf_alg](), 104, ni + nr).derive(keys.sk_d)
    assert e1 + a1 + e2 + a2 == km2 and len(e1) == 20 and len(a2) == 32


# -- key exchange ------------------------------------------------------------------------

def test_x25519_rfc7748() -> None:
    # RFC 7748 §6.1
    alice = KeyExchange.from_private(DhGroup.CURVE25519, bytes.fromhex(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert alice.public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert alice.shared(bob_pub).hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def _pi_digits(n: int) -> int:
    """floor(pi * 10^n) by Machin's formula, for checking the RFC 3526 prime from its definition."""
    def arctan_inv(x: int, one: int) -> int:
        total = term = one // x
        k, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * k + 1))
            sign, k = -sign, k + 1
        return total
    guard = 10 ** 10
    one = 10 ** n * guard
    return (4 * (4 * arctan_inv(5, one) - arctan_inv(239, one))) // guard


def test_modp2048_prime_matches_rfc3526_definition() -> None:
    digits = 640
    pi_scaled = _pi_digits(digits)      # pi * 10^640
    floor_term = (2 ** 1918 * pi_scaled) // 10 ** digits
    assert MODP_2048_P == 2 ** 2048 - 2 ** 1984 - 1 + 2 ** 64 * (floor_term + 124476)


@pytest.mark.parametrize("group", [DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.ECP_521,
                                   DhGroup.CURVE25519, DhGroup.CURVE448])
def test_key_exchange_agrees(group: int) -> None:
    a, b = KeyExchange(group), KeyExchange(group)
    size = {DhGroup.MODP_2048: 256, DhGroup.ECP_256: 64, DhGroup.ECP_384: 96, DhGroup.ECP_521: 132,
            DhGroup.CURVE25519: 32, DhGroup.CURVE448: 56}[group]
    assert len(a.public) == size
    assert a.shared(b.public) == b.shared(a.public)
    with pytest.raises(CryptoError):
        a.shared(b.public[:-1])


@pytest.mark.parametrize("curve,group,size", [(ec.SECP256R1, DhGroup.ECP_256, 32), (ec.SECP384R1, DhGroup.ECP_384, 48)])
def test_ecp_rfc5903_encoding(curve, group: int, size: int) -> None:
    # RFC 5903: KE data is x || y; the shared secret is the x coordinate of the product
    peer = ec.generate_private_key(curve())
    n = peer.public_key().public_numbers()
    ours = KeyExchange(group)
    shared = ours.shared(n.x.to_bytes(size, "big") + n.y.to_bytes(size, "big"))
    ours_pub = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b"\x04" + ours.public)
    assert shared == peer.exchange(ec.ECDH(), ours_pub)
    with pytest.raises(CryptoError):            # a point off the curve
        ours.shared((n.x + 1).to_bytes(size, "big") + n.y.to_bytes(size, "big"))


def test_invalid_public_values() -> None:
    modp = KeyExchange(DhGroup.MODP_2048)
    for bad in (1, MODP_2048_P - 1, MODP_2048_P, 0):
        with pytest.raises(CryptoError):
            modp.shared(bad.to_bytes(256, "big"))
    with pytest.raises(CryptoError):            # small-order point: all-zero X25519 result
        KeyExchange(DhGroup.CURVE25519).shared(bytes(32))


# -- SK payload ---------------------------------------------------------------------------

SUITES = [
    IkeSuite(Encr.AES_GCM_16, 128, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519),
    IkeSuite(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519),
    IkeSuite(Encr.CHACHA20_POLY1305, None, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519),
    IkeSuite(Encr.AES_CBC, 128, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.CURVE25519),
    IkeSuite(Encr.AES_CBC, 256, Prf.HMAC_SHA2_384, Integ.HMAC_SHA2_384_192, DhGroup.ECP_384),
    IkeSuite(Encr.AES_CBC, 256, Prf.HMAC_SHA2_512, Integ.HMAC_SHA2_512_256, DhGroup.ECP_521),
]


def _cipher(suite: IkeSuite, enc_key: bytes | None = None, integ_key: bytes | None = None) -> SKCipher:
    from control.ike.crypto import INTEG, encr_key_len
    ek = enc_key or os.urandom(encr_key_len(suite.encr, suite.key_bits))
    ik = integ_key if integ_key is not None else (os.urandom(INTEG[suite.integ].key_len) if suite.integ else b"")
    return SKCipher(suite, ek, ik)


def _template() -> Message:
    return Message(os.urandom(8), os.urandom(8), ExchangeType.IKE_AUTH, Flag.INITIATOR, 1)


INNER = [IDPayload(2, b"gw-a.example", True), NotifyPayload(16384), NoncePayload(os.urandom(32))]


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"{s.encr}-{s.key_bits}-{s.integ}")
def test_sk_round_trip_and_tamper(suite: IkeSuite) -> None:
    from control.ike.crypto import INTEG, encr_key_len
    ek = os.urandom(encr_key_len(suite.encr, suite.key_bits))
    ik = os.urandom(INTEG[suite.integ].key_len) if suite.integ else b""
    tx, rx = SKCipher(suite, ek, ik), SKCipher(suite, ek, ik)
    data = tx.protect(_template(), INNER)
    msg = Message.parse(data)
    sk = msg.payloads[-1]
    assert isinstance(sk, SKPayload) and sk.first == INNER[0].type
    assert rx.unprotect(data, sk) == INNER
    # every single-byte change past the SPIs is caught (header fields are authenticated too)
    for pos in range(16, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        try:
            m = Message.parse(bytes(bad))
        except Exception:               # the codec may already refuse it (lengths, types)
            continue
        if not m.payloads or not isinstance(m.payloads[-1], SKPayload):
            continue
        with pytest.raises(CryptoError):
            rx.unprotect(bytes(bad), m.payloads[-1])
    # a different key does not verify
    with pytest.raises(CryptoError):
        _cipher(suite).unprotect(data, sk)


def test_sk_gcm_matches_rfc5282_construction() -> None:
    suite = SUITES[0]
    key = os.urandom(20)
    data = SKCipher(suite, key, b"").protect(_template(), INNER)
    # RFC 5282: nonce = salt (last 4 key bytes) || 8-byte IV; AAD = IKE header || SK generic header
    aad, iv, ct = data[:32], data[32:40], data[40:]
    plain = AESGCM(key[:16]).decrypt(key[16:] + iv, ct, aad)
    assert plain[-1] == 0 and struct.unpack("!H", data[30:32])[0] == len(data) - 28
    from control.ike.payload_chain import parse_payloads
    assert parse_payloads(data[28], plain[:-1]) == INNER


def test_sk_gcm_ivs_never_repeat() -> None:
    c = _cipher(SUITES[0])
    ivs = {c.protect(_template(), INNER)[32:40] for _ in range(50)}
    assert len(ivs) == 50


def test_sk_too_short_and_bad_padding() -> None:
    suite = SUITES[3]
    ek, ik = os.urandom(16), os.urandom(32)
    rx = SKCipher(suite, ek, ik)
    m = _template()
    for n in (0, 16, 31, 47):
        body = os.urandom(n)
        data = m.header(46, 28 + 4 + n) + struct.pack("!BBH", 0, 0, 4 + n) + body
        with pytest.raises(CryptoError):
            rx.unprotect(data, Message.parse(data).payloads[-1])
