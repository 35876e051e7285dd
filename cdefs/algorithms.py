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


@dataclass(frozen=True)
class AhIntegAlg:
    """An AH integrity algorithm (RFC 4302; RFC 4543 for GMAC).

    AH has its own table because it authenticates with algorithms ESP here does not
    (HMAC-SHA1-96) and carries GMAC's IV inside the ICV field rather than as an ESP IV.
    """

    name: str
    code: int           # IPSG_INTEG_* (the SA slot carries it; cdefs/esp/ah_core.c runs it)
    key_len: int        # configured key bytes, GMAC's 4-byte salt at the end included
    icv_len: int        # the tag (truncated HMAC output, or the 16-byte GMAC tag)
    hash: str           # cryptography hash name; "gmac" for AES-GMAC
    salt_len: int = 0
    iv_len: int = 0     # GMAC: explicit IV ahead of the tag in the ICV field

    @property
    def field_len(self) -> int:
        """Bytes of the AH ICV field before alignment padding."""
        return self.iv_len + self.icv_len


def _ah_gmac(bits: int) -> AhIntegAlg:
    return AhIntegAlg(f"aes-gmac-{bits}", _D["IPSG_INTEG_AES_GMAC"], bits // 8 + 4, 16, "gmac", salt_len=4, iv_len=8)


AH_INTEG_ALGS: dict[str, AhIntegAlg] = {
    a.name: a
    for a in (
        AhIntegAlg("hmac-sha1-96", _D["IPSG_INTEG_HMAC_SHA1_96"], 20, 12, "sha1"),
        AhIntegAlg("hmac-sha256-128", _D["IPSG_INTEG_HMAC_SHA256_128"], 32, 16, "sha256"),
        AhIntegAlg("hmac-sha384-192", _D["IPSG_INTEG_HMAC_SHA384_192"], 48, 24, "sha384"),
        AhIntegAlg("hmac-sha512-256", _D["IPSG_INTEG_HMAC_SHA512_256"], 64, 32, "sha512"),
        _ah_gmac(128), _ah_gmac(192), _ah_gmac(256),
    )
}
