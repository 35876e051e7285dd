"""The responder's front door for new IKE_SA_INIT requests (RFC 7296 §2.6): stateless COOKIEs
under load and a hard bound on half-open IKE SAs.

Before an ``IkeSA`` exists for a request, ``ResponderGate.check`` decides whether to create one.
Below ``cookie_threshold`` half-open SAs every well-formed request is let in.  At or above it a
request must carry a valid COOKIE as its first payload, else it is answered, in the clear and
without keeping any state, with a COOKIE notify:

    Cookie = <secret version> | HMAC-SHA256(<secret>, Ni | IPi | SPIi)[:16]

The secret rotates every ``secret_lifetime`` seconds; cookies made with the previous secret are
still accepted, so a rotation between challenge and retry does not cost a round trip.  At
``max_half_open`` new requests are dropped outright, unless the caller keeps that limit itself and
passes None (the daemon's ``control.responder_gate.AdmissionGate`` does, before this gate runs).  Every
decision is counted in ``stats``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections import Counter

from control.ike.constants import NON_ESP_MARKER, ExchangeType, Flag, Notify
from control.ike.events import Address, Datagram
from control.ike.message import Message, parse_header
from control.ike.payloads import NoncePayload, NotifyPayload, ParseError
from control.ike.sa import version_reply

COOKIE_HASH_LEN = 16
# how long one secret makes cookies; the previous one is still accepted, so a cookie stays good for one
# to two lifetimes.  Not a config key: it only bounds how long a cookie (bound to IPi, SPIi and Ni) can
# be replayed and how slow a retry may be, and no deployment needs either tuned.
COOKIE_SECRET_LIFETIME = 60.0
# checked for every new request: plain ints (IntFlag & and enum class attributes run in Python)
_IKE_SA_INIT, _RESPONSE, _INITIATOR = int(ExchangeType.IKE_SA_INIT), int(Flag.RESPONSE), int(Flag.INITIATOR)
_ZERO_SPI = bytes(8)


class ResponderGate:
    def __init__(self, *, cookie_threshold: int = 50, max_half_open: int | None = 5000,
                 secret_lifetime: float = COOKIE_SECRET_LIFETIME, natt_port: int = 4500):
        if not secret_lifetime > 0:
            raise ValueError("secret_lifetime must be positive")
        if cookie_threshold < 0 or (max_half_open is not None and cookie_threshold > max_half_open):
            raise ValueError("cookie_threshold must lie between 0 and max_half_open")
        self.cookie_threshold = cookie_threshold
        self.max_half_open = max_half_open
        self.secret_lifetime = secret_lifetime
        self.natt_port = natt_port
        self.stats: Counter[str] = Counter()
        self._secrets: dict[int, bytes] = {}
        self._epoch: int | None = None

    def _rotate(self, now: float) -> int:
        epoch = int(now // self.secret_lifetime)
        if epoch != self._epoch:
            # keep the current and the previous secret only
            self._secrets = {v: s for v, s in self._secrets.items() if v == (epoch - 1) & 0xFF}
            self._secrets[epoch & 0xFF] = os.urandom(32)
            self._epoch = epoch
        return epoch & 0xFF

    def cookie(self, nonce: bytes, ip: str, spi_i: bytes, now: float, version: int | None = None) -> bytes | None:
        current = self._rotate(now)
        v = current if version is None else version
        secret = self._secrets.get(v)
        if secret is None:
            return None
        return bytes([v]) + hmac.digest(secret, nonce + ipaddress.ip_address(ip).packed + spi_i,
                                        "sha256")[:COOKIE_HASH_LEN]

    def check(self, data: bytes, local_port: int, remote: Address, now: float,
              half_open: int) -> tuple[bool, Datagram | None]:
        """(let it in, datagram to answer with) for a datagram that matches no IKE SA."""
        ok, reply, _ = self.decide(data, local_port, remote, now, half_open)
        return ok, reply

    def decide(self, data: bytes, local_port: int, remote: Address, now: float,
               half_open: int) -> tuple[bool, Datagram | None, tuple[str, ...]]:
        """``check``, and which ``stats`` counters this decision added (a wrong COOKIE adds two:
        cookie_invalid, then cookie_sent), so a caller keeping its own counters need not diff ours."""
        ok, reply, counted = self._decide(data, local_port, remote, now, half_open)
        for k in counted:
            self.stats[k] += 1
        return ok, reply, counted

    def _decide(self, data: bytes, local_port: int, remote: Address, now: float,
                half_open: int) -> tuple[bool, Datagram | None, tuple[str, ...]]:
        natt = local_port == self.natt_port
        marker = NON_ESP_MARKER if natt else b""
        if natt:
            if not data.startswith(NON_ESP_MARKER):
                return False, None, ("not_ike",)
            data = data[4:]
        try:
            hdr = parse_header(data)
        except ParseError as exc:
            if exc.notify == Notify.INVALID_MAJOR_VERSION:
                reply = version_reply(data)
                if reply is not None:
                    return False, Datagram(marker + reply, local_port, remote), ("invalid_major_version",)
            return False, None, ("malformed",)
        if hdr.exchange != _IKE_SA_INIT or hdr.flags & _RESPONSE or not hdr.flags & _INITIATOR or \
                hdr.spi_r != _ZERO_SPI or hdr.message_id != 0:
            return False, None, ("no_such_sa",)
        if self.max_half_open is not None and half_open >= self.max_half_open:
            return False, None, ("half_open_limit",)
        if half_open < self.cookie_threshold:
            return True, None, ("accepted",)
        try:
            msg = Message.parse(data)
        except ParseError:
            # the IkeSA would answer INVALID_SYNTAX; under load we do not spend state on it
            return False, None, ("malformed",)
        nonce = msg.get(NoncePayload)
        if not isinstance(nonce, NoncePayload):
            return False, None, ("malformed",)
        first = msg.payloads[0]
        counted: tuple[str, ...] = ()
        if isinstance(first, NotifyPayload) and first.notify_type == Notify.COOKIE:
            got = first.data
            want = self.cookie(nonce.data, remote[0], hdr.spi_i, now, got[0] if got else None)
            if want is not None and len(got) == len(want) and hmac.compare_digest(got, want):
                return True, None, ("cookie_accepted",)
            counted = ("cookie_invalid",)
        value = self.cookie(nonce.data, remote[0], hdr.spi_i, now)
        assert value is not None
        reply = Message(hdr.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, Flag.RESPONSE, 0,
                        [NotifyPayload(Notify.COOKIE, value)]).serialize()
        return False, Datagram(marker + reply, local_port, remote), (*counted, "cookie_sent")

__all__ = ["ResponderGate", "COOKIE_HASH_LEN", "COOKIE_SECRET_LIFETIME"]
