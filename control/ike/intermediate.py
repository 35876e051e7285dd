"""RFC 9242 IKE_INTERMEDIATE authentication and the RFC 9370 key update after each additional key exchange.

IKE_INTERMEDIATE messages are not signed as they go: each side folds every one of them into a running MAC,
IntAuth_i for the initiator's messages and IntAuth_r for the responder's (RFC 9242 §3.3.2):

    IntAuth_i(n) = prf(SK_pi(n), IntAuth_i(n-1) | IntAuth_i(n)_A | IntAuth_i(n)_P)

with SK_pi(n) the key of the SA keys that protect message n, A the message from the IKE header through the
Encrypted payload's generic header (its lengths counting the clear inner payloads only, see
``intauth_head``) and P those inner payloads.  The AUTH payloads then sign IntAuth_i | IntAuth_r |
IKE_AUTH's Message ID after RFC 7296's octets, so a tampered IKE_INTERMEDIATE fails authentication.
"""

from __future__ import annotations

import struct

from control.ike.constants import PayloadType
from control.ike.crypto import IkeKeys, prf
from control.ike.message import HEADER_LEN, Message

_SK = int(PayloadType.SK)


def intauth_head(msg: Message, first: int, plain_len: int) -> bytes:
    """IntAuth_*_A of a message whose SK payload carries ``plain_len`` bytes of inner payloads: the IKE
    header (Next Payload SK) and the SK payload's generic header, their Length fields counting the inner
    payloads alone, without IV, padding and ICV.  So the value does not depend on the cipher, nor on
    whether the message went out whole or in RFC 7383 fragments (strongSwan 6 computes it so too)."""
    sk_len = 4 + plain_len
    return msg.header(_SK, HEADER_LEN + sk_len) + struct.pack("!BBH", first, 0, sk_len)


class IntAuth:
    """The running IntAuth_i and IntAuth_r of one IKE SA's IKE_INTERMEDIATE exchanges."""

    __slots__ = ("i", "r", "last_mid", "messages")

    def __init__(self) -> None:
        self.i = b""
        self.r = b""
        self.last_mid: int | None = None
        self.messages = 0

    def add(self, prf_alg: int, keys: IkeKeys, from_initiator: bool, head: bytes, plain: bytes, mid: int) -> None:
        """Fold one IKE_INTERMEDIATE message in, under the keys that protect it."""
        if from_initiator:
            self.i = prf(prf_alg, keys.sk_pi, self.i + head + plain)
        else:
            self.r = prf(prf_alg, keys.sk_pr, self.r + head + plain)
        self.last_mid = mid
        self.messages += 1

    def octets(self) -> bytes:
        """What AUTH signs after RFC 7296's octets: empty when no IKE_INTERMEDIATE took place.  IKE_AUTH's
        Message ID follows the last IKE_INTERMEDIATE's (the exchanges run one at a time)."""
        if self.last_mid is None:
            return b""
        return self.i + self.r + struct.pack("!I", self.last_mid + 1)

    def __repr__(self) -> str:          # MACs keyed with SK_p
        return f"IntAuth(<redacted>, messages={self.messages})"


__all__ = ["IntAuth", "intauth_head"]
