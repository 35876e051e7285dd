"""The responder's front door: what a new IKE_SA_INIT request must pass before any IKE state is made for it.

In order, each step cheaper than what it protects:

1. **Shape** (``screen``): the header's major version, the payload chain walked by its generic headers
   only (each length, the total against the header's and the datagram's), and SA, KE and Nonce present.
   A request that fails takes no state and no parsing beyond that; each drop is counted by reason
   (``init_bad_version``, ``init_bad_chain``, ``init_missing_payload``).  A version above 2 is answered
   with INVALID_MAJOR_VERSION (RFC 7296 §2.5) only when that answer is no larger than the request.
2. **Hard limit**: at ``max_half_open`` half-open IKE SAs new requests are dropped before any DH work
   (``half_open_full``).
3. **COOKIEs** (RFC 7296 §2.6, ``control.ike.cookie.ResponderGate``): at ``cookie_threshold`` half-open
   SAs a request must return a COOKIE made with the current or the previous secret (checked in constant
   time), else it is answered statelessly with one (``cookie_sent``, ``cookie_invalid``,
   ``cookie_accepted``).
4. **Per source**: a source holding ``per_source`` half-open SAs must return a COOKIE whatever the
   load, so requests spoofed in its name cannot lock the real peer out; and at most ``per_source`` of its
   half-open SAs may be ones made with a valid COOKIE (``half_open_per_source``): a real address that
   opens IKE_SA_INITs and never sends IKE_AUTH holds at most that many, each until ``half_open_timeout``.
   A source is an IPv4 address, or an IPv6 /64 (``source_of``): one host gets a whole /64, so a limit
   per IPv6 address would be no limit at all.
5. **Decode** (``decodes``): every payload of the request decoded, as the IKE SA would; one that does
   not (a malformed SA, KE or Nonce body) takes no state (``init_malformed``).  It comes last because it
   is the dearest check that needs no key: a flood pays for it only up to the limits above.

Every answer to an unverified source is at most as large as the request it answers
(``reply_too_large`` counts the ones withheld).  A half-open SA is dropped after ``half_open_timeout``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from control.ike.cookie import COOKIE_SECRET_LIFETIME, ResponderGate
from control.ike.events import Address, Datagram
from control.ike.message import Message
from control.ike.payloads import ParseError
from control.ike.sa import version_reply

if TYPE_CHECKING:
    from control.config.model import GatewayConfig

__all__ = ["AdmissionGate", "Admission", "screen", "source_of", "HALF_OPEN_MAX", "HALF_OPEN_TIMEOUT",
           "HALF_OPEN_PER_SOURCE", "COOKIE_THRESHOLD"]

HALF_OPEN_TIMEOUT = 30.0        # responder SAs that never finish IKE_AUTH are dropped after this
HALF_OPEN_MAX = 1024            # beyond this, new IKE_SA_INIT requests are dropped
HALF_OPEN_PER_SOURCE = 5        # half-open SAs one peer address may hold (strongSwan's block_threshold)
COOKIE_THRESHOLD = 30           # from this many half-open SAs on, requests must return a COOKIE

_HEADER_LEN = 28
_SA, _KE, _NONCE = 33, 34, 40
_NEEDED = frozenset((_SA, _KE, _NONCE))


def screen(msg: bytes) -> str | None:
    """Why an IKE_SA_INIT request (without the non-ESP marker) would be refused anyway, or None.  Only
    the generic payload headers are read: no payload is decoded."""
    n = len(msg)
    if n < _HEADER_LEN:
        return "init_bad_chain"
    if msg[17] >> 4 != 2:
        return "init_bad_version"
    if int.from_bytes(msg[24:28], "big") != n:
        return "init_bad_chain"
    nxt, off, seen = msg[16], _HEADER_LEN, set()
    while nxt:
        if off + 4 > n:
            return "init_bad_chain"
        length = (msg[off + 2] << 8) | msg[off + 3]
        if length < 4 or off + length > n:
            return "init_bad_chain"
        seen.add(nxt)
        nxt, off = msg[off], off + length
    if off != n:
        return "init_bad_chain"
    if not _NEEDED <= seen:
        return "init_missing_payload"
    return None


def decodes(msg: bytes) -> bool:
    """Whether every payload of a request decodes (step 5, after the limits: this one costs a full parse)."""
    try:
        Message.parse(msg)
    except ParseError:
        return False
    return True


def source_of(ip: str) -> str:
    """What the per-source limit counts by: an IPv4 address as it is (also one mapped into IPv6), an IPv6
    address by its /64, written as the network (``2001:db8:1:2::/64``)."""
    if ":" not in ip:
        return ip
    try:
        a = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(a) >> 64 << 64)}/64"


class Admission(NamedTuple):
    let_in: bool
    reply: Datagram | None      # sent back whether or not the request is let in
    refused: str | None         # the daemon's counter for a refusal; None when let in
    verified: bool = False      # let in with a valid COOKIE: its source address is real


_LET_IN = Admission(True, None, None)
_LET_IN_VERIFIED = Admission(True, None, None, True)


class AdmissionGate:
    def __init__(self, *, max_half_open: int = HALF_OPEN_MAX, cookies: ResponderGate | None = None,
                 per_source: int | None = None, half_open_timeout: float = HALF_OPEN_TIMEOUT,
                 natt_port: int = 4500):
        self.max_half_open = max_half_open
        self.cookies = cookies
        self.per_source = per_source            # None: no per-source limit
        self.half_open_timeout = half_open_timeout
        self.natt_port = natt_port
        self.stats: Counter[str] = Counter()
        self._half_open: dict[tuple[bytes, str], bytes] = {}    # (initiator SPI, peer address) -> our SPI
        self._key: dict[bytes, tuple[bytes, str]] = {}          # our SPI -> its key
        self._by_source: Counter[str] = Counter()                # source_of(peer address) -> half-open SAs
        self._verified: Counter[str] = Counter()                 # ... of those, made with a valid COOKIE
        self._verified_spis: set[bytes] = set()

    @classmethod
    def for_gateway(cls, gw: GatewayConfig, *, secret_lifetime: float = COOKIE_SECRET_LIFETIME) -> AdmissionGate:
        """The gate ``ipsecgw run`` uses: the gateway section's limits, COOKIEs past its threshold made with
        a secret that rotates every ``secret_lifetime`` seconds."""
        # the hard limit is ours alone (step 2 runs before the cookie gate): the cookie gate keeps none
        cookies = ResponderGate(cookie_threshold=gw.cookie_threshold, max_half_open=None,
                                secret_lifetime=secret_lifetime, natt_port=gw.natt_port)
        return cls(max_half_open=gw.half_open_max, cookies=cookies, per_source=gw.half_open_per_source,
                   half_open_timeout=float(gw.half_open_timeout), natt_port=gw.natt_port)

    def known(self, spi_i: bytes, remote: Address) -> bytes | None:
        """Our SPI of the half-open IKE SA a retransmitted request made already."""
        return self._half_open.get((spi_i, remote[0]))

    def _refuse(self, why: str, reply: Datagram | None = None) -> Admission:
        self.stats[why] += 1
        return Admission(False, reply, why)

    def admit(self, data: bytes, local_port: int, remote: Address, now: float) -> Admission:
        """Whether to make an IKE SA for a new IKE_SA_INIT request, and what to answer it with."""
        marker = local_port == self.natt_port
        msg = data[4:] if marker else data
        why = screen(msg)
        if why is not None:
            reply = None
            if why == "init_bad_version":
                v = version_reply(msg)
                if v is not None and len(v) <= len(msg):
                    reply = Datagram(data[:4] + v if marker else v, local_port, remote)
                elif v is not None:
                    self.stats["reply_too_large"] += 1
            return self._refuse(why, reply)
        n = len(self._half_open)
        if n >= self.max_half_open:
            return self._refuse("half_open_full")
        verified = False
        ip = source_of(remote[0])
        at_limit = self.per_source is not None and self._by_source[ip] >= self.per_source
        if self.cookies is not None:
            # a source at its limit must prove its address: spoofed requests in its name cannot lock it out
            ok, reply, decided = self.cookies.decide(data, local_port, remote, now,
                                                     max(n, self.cookies.cookie_threshold) if at_limit else n)
            # what the cookie gate decided: cookie_sent, cookie_invalid + cookie_sent, cookie_accepted, ...
            for k in decided:
                if k != "accepted":
                    self.stats[k] += 1
            if reply is not None and len(reply.data) > len(data):
                self.stats["reply_too_large"] += 1
                reply = None
            if not ok:
                return Admission(False, reply, "cookie_gate")
            verified = "cookie_accepted" in decided
        if self.per_source is not None:
            # verified (cookie returned) half-open SAs of a source have a limit of their own
            held = self._verified[ip] if verified else self._by_source[ip]
            if held >= self.per_source:
                return self._refuse("half_open_per_source")
        # the whole decode comes last, once every cheaper check has passed, so a flood pays for it only up to
        # the limits: a request whose SA, KE or Nonce body does not decode would make an IKE SA that can only
        # answer it with an error and then sit half-open until half_open_timeout
        if not decodes(msg):
            return self._refuse("init_malformed")
        return _LET_IN_VERIFIED if verified else _LET_IN

    def opened(self, spi_i: bytes, remote: Address, our_spi: bytes, *, verified: bool = False) -> None:
        """``verified``: the request returned a valid COOKIE, so its source address is real."""
        key = (spi_i, remote[0])
        self._half_open[key] = our_spi
        self._key[our_spi] = key
        src = source_of(remote[0])
        self._by_source[src] += 1
        if verified:
            self._verified[src] += 1
            self._verified_spis.add(our_spi)

    def closed(self, our_spi: bytes, *, timed_out: bool = False) -> None:
        """The IKE SA is established or gone: it no longer counts as half-open.  ``timed_out``: the core
        ended it after ``half_open_timeout`` without IKE_AUTH (counted: slow or abusive peers show there)."""
        key = self._key.pop(our_spi, None)
        if key is None or self._half_open.get(key) != our_spi:
            return
        if timed_out:
            self.stats["half_open_timeout"] += 1
        del self._half_open[key]
        ip = source_of(key[1])
        self._by_source[ip] -= 1
        if self._by_source[ip] <= 0:
            del self._by_source[ip]
        if our_spi in self._verified_spis:
            self._verified_spis.discard(our_spi)
            self._verified[ip] -= 1
            if self._verified[ip] <= 0:
                del self._verified[ip]

    def from_source(self, ip: str) -> int:
        """Half-open SAs counted against ``ip``'s source (its /64 for IPv6)."""
        return self._by_source.get(source_of(ip), 0)

    def status(self) -> dict[str, object]:
        """What ``ipsecgw status`` shows of the gate: half-open now, the limits, drops by reason."""
        return {"half_open": len(self._half_open), "max_half_open": self.max_half_open,
                "per_source": self.per_source, "half_open_timeout": self.half_open_timeout,
                "cookie_threshold": self.cookies.cookie_threshold if self.cookies is not None else None,
                "busiest_source": max(self._by_source.values(), default=0), "counters": dict(self.stats)}

    def __len__(self) -> int:
        return len(self._half_open)
