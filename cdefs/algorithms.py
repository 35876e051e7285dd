"""ESP algorithm table: names operators write, and the sizes ESP framing needs."""

from __future__ import annotations

from dataclasses import dataclass

from cdefs import defines

_D = defines("esp.h")


@dataclass(frozen=True)
class EncAlg:
    name: str
    code: int           # IPSG_ENC_*
    key_len: int        # cipher key bytes, without salt
    salt_len: int       # AEAD salt carried at the end of the configured key
    iv_len: int         # explicit IV in each packet
    block: int          # payload+trailer is padded to a multiple of this
    icv_len: int        # 0 for non-AEAD (the integrity algorithm supplies it)
    aead: bool
    encrypts: bool      # False for NULL and GMAC (authentication only)

    @property
    def config_key_len(self) -> int:
        return self.key_len + self.salt_len


@dataclass(frozen=True)
class IntegAlg:
    name: str
    code: int           # IPSG_INTEG_*
    key_len: int
    icv_len: int        # truncated output length
    hash: str           # hashlib / cryptography name


def _gcm(bits: int) -> EncAlg:
    return EncAlg(f"aes-gcm-{bits}", _D["IPSG_ENC_AES_GCM"], bits // 8, 4, 8, 4, 16, True, True)


def _gmac(bits: int) -> EncAlg:
    return EncAlg(f"aes-gmac-{bits}", _D["IPSG_ENC_AES_GMAC"], bits // 8, 4, 8, 4, 16, True, False)


def _cbc(bits: int) -> EncAlg:
    return EncAlg(f"aes-cbc-{bits}", _D["IPSG_ENC_AES_CBC"], bits // 8, 0, 16, 16, 0, False, True)


ENC_ALGS: dict[str, EncAlg] = {
    a.name: a
    for a in (
        _gcm(128), _gcm(192), _gcm(256),
        _gmac(128), _gmac(192), _gmac(256),
        _cbc(128), _cbc(256),
        EncAlg("chacha20-poly1305", _D["IPSG_ENC_CHACHA20_POLY1305"], 32, 4, 8, 4, 16, True, True),
        EncAlg("null", _D["IPSG_ENC_NULL"], 0, 0, 0, 4, 0, False, False),
    )
}

INTEG_ALGS: dict[str, IntegAlg] = {
    a.name: a
    for a in (
        IntegAlg("hmac-sha256-128", _D["IPSG_INTEG_HMAC_SHA256_128"], 32, 16, "sha256"),
        IntegAlg("hmac-sha384-192", _D["IPSG_INTEG_HMAC_SHA384_192"], 48, 24, "sha384"),
        IntegAlg("hmac-sha512-256", _D["IPSG_INTEG_HMAC_SHA512_256"], 64, 32, "sha512"),
    )
}

AEAD_NAMES = tuple(n for n, a in ENC_ALGS.items() if a.aead)
CIPHER_NAMES = tuple(n for n, a in ENC_ALGS.items() if not a.aead)
