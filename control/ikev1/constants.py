"""IKEv1 numbers: ISAKMP (RFC 2408), the IPsec DOI (RFC 2407), IKE's attributes (RFC 2409 appendix A),
NAT-T (RFC 3947) and DPD (RFC 3706)."""

from __future__ import annotations

import enum

ISAKMP_VERSION = 0x10          # major 1, minor 0
HEADER_LEN = 28
DOI_IPSEC = 1
SIT_IDENTITY_ONLY = 1


class Exchange(enum.IntEnum):
    MAIN = 2                    # identity protection
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    QUICK = 32


class Flag(enum.IntFlag):
    ENCRYPTION = 1
    COMMIT = 2
    AUTH_ONLY = 4


class PayloadType(enum.IntEnum):
    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VID = 13
    NAT_D = 20
    NAT_OA = 21


class Protocol(enum.IntEnum):
    ISAKMP = 1
    AH = 2
    ESP = 3


KEY_IKE = 1                     # the one phase 1 transform ID


class P1Attr(enum.IntEnum):
    """Phase 1 SA attribute classes (RFC 2409 appendix A)."""

    ENCR = 1
    HASH = 2
    AUTH = 3
    GROUP = 4
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    KEY_LENGTH = 14


class P1Encr(enum.IntEnum):
    DES = 1
    TRIPLE_DES = 5
    AES_CBC = 7                 # RFC 3602


class P1Hash(enum.IntEnum):
    MD5 = 1
    SHA1 = 2
    SHA2_256 = 4                # RFC 4878
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(enum.IntEnum):
    PSK = 1
    DSS = 2
    RSA_SIG = 3
    ECDSA_256 = 9               # RFC 4754
    ECDSA_384 = 10
    ECDSA_521 = 11


class LifeType(enum.IntEnum):
    SECONDS = 1
    KILOBYTES = 2


class P2Attr(enum.IntEnum):
    """IPsec DOI SA attributes (RFC 2407 §4.5)."""

    LIFE_TYPE = 1
    LIFE_DURATION = 2
    GROUP = 3
    ENCAPSULATION = 4
    AUTH = 5
    KEY_LENGTH = 6


class Encapsulation(enum.IntEnum):
    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3              # RFC 3947
    UDP_TRANSPORT = 4


class EspId(enum.IntEnum):
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_GCM_8 = 18              # RFC 4106
    AES_GCM_12 = 19
    AES_GCM_16 = 20


class P2Auth(enum.IntEnum):
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_SHA2_256 = 5           # RFC 4868's truncation to 128 bits
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IdType(enum.IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    KEY_ID = 11


class NotifyType(enum.IntEnum):
    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    AUTHENTICATION_FAILED = 24
    INVALID_HASH_INFORMATION = 23
    RESPONDER_LIFETIME = 24576  # RFC 2407 §4.6.3
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136           # RFC 3706
    R_U_THERE_ACK = 36137


# Vendor IDs a peer announces its extensions with: RFC 3947 NAT-T (MD5 of "RFC 3947") and RFC 3706 DPD
VID_NATT_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
