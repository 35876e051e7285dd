"""The negotiated state of one ESP or AH SA, independent of any engine.

An SA is what IKE (or a static SA file) agrees on; a *session* is how an engine
executes it.  Engines take an ``SA`` plus a direction and build their own
session from it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS, AhIntegAlg, EncAlg, IntegAlg

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REPLAY_WINDOW_MAX = 4096

_DF_VALUES = ("copy", "set", "clear")
_ECN_VALUES = ("normal", "compat")
_FLOWLABEL_VALUES = ("copy", "zero")
PROTOCOLS = ("esp", "ah")
_ADDRESS_CLASSES = frozenset({ipaddress.IPv4Address, ipaddress.IPv6Address})


class SAError(ValueError):
    """An SA parameter is invalid; ``field`` names it, ``expected`` says what fits."""

    def __init__(self, field_name: str, expected: str, got: object = None):
        self.field = field_name
        self.expected = expected
        self.got = got
        detail = f"{field_name}: expected {expected}"
        if got is not None:
            detail += f", got {got!r}"
        super().__init__(detail)


class Mode(enum.StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(enum.StrEnum):
    OUT = "out"
    IN = "in"


@dataclass(frozen=True)
class TrafficSelector:
    """Inclusive address range, protocol (0 = any) and inclusive port range."""

    start: IPAddress
    end: IPAddress
    proto: int = 0
    port_lo: int = 0
    port_hi: int = 65535

    @classmethod
    def any(cls, version: int) -> TrafficSelector:
        net = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
        return cls(net[0], net[-1])

    @classmethod
    def from_network(cls, net: str, proto: int = 0, port_lo: int = 0, port_hi: int = 65535) -> TrafficSelector:
        n = ipaddress.ip_network(net, strict=False)
        return cls(n[0], n[-1], proto, port_lo, port_hi)

    @property
    def version(self) -> int:
        return self.start.version

    def contains(self, addr: IPAddress, proto: int, port: int | None) -> bool:
        """Whether an address (with its protocol and port, if any) falls in this selector."""
        if addr.version != self.version or not (self.start <= addr <= self.end):
            return False
        if self.proto and proto != self.proto:
            return False
        if port is not None and not (self.port_lo <= port <= self.port_hi):
            return False
        if port is None and (self.port_lo, self.port_hi) != (0, 65535):
            return False
        return True


@dataclass
class Lifetime:
    """Limits in bytes/packets, enforced by the data plane. 0 = none.

    Time limits are not here: control keeps them as timers of its own (the CHILD's rekey_time and
    hard_seconds), since no engine reads a clock per SA.
    """

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0


@dataclass
class SA:
    spi: int
    src: IPAddress
    dst: IPAddress
    enc: str
    enc_key: bytes
    integ: str | None = None
    integ_key: bytes = b""
    mode: Mode = Mode.TUNNEL
    esn: bool = False
    seq: int = 1
    replay_window: int = 64
    udp_encap: bool = False
    sport: int = 4500
    dport: int = 4500
    ttl: int = 64
    df: str = "copy"            # copy | set | clear (IPv4 outer header)
    dscp: int | None = None     # None copies the inner DSCP; else a fixed 0..63
    ecn: str = "normal"         # RFC 6040: normal (copy) | compat (outer Not-ECT)
    flowlabel: str = "copy"     # copy (6-in-6) | zero
    local_ts: list[TrafficSelector] = field(default_factory=list)   # empty = any
    remote_ts: list[TrafficSelector] = field(default_factory=list)
    lifetime: Lifetime = field(default_factory=Lifetime)
    # esp | ah.  An AH SA has enc "null" with no key: integ/integ_key (AH_INTEG_ALGS) are all it uses.
    proto: str = "esp"

    def __post_init__(self) -> None:
        self.mode = Mode(self.mode)
        self.validate()

    @property
    def enc_alg(self) -> EncAlg:
        return ENC_ALGS[self.enc]

    @property
    def is_ah(self) -> bool:
        return self.proto == "ah"

    @property
    def integ_alg(self) -> IntegAlg | AhIntegAlg | None:
        if self.proto == "ah":
            return AH_INTEG_ALGS[self.integ] if self.integ else None
        return INTEG_ALGS[self.integ] if self.integ else None

    @property
    def icv_len(self) -> int:
        integ = self.integ_alg
        return integ.icv_len if integ else self.enc_alg.icv_len

    @property
    def cipher_key(self) -> bytes:
        alg = self.enc_alg
        return self.enc_key[: alg.key_len]

    @property
    def salt(self) -> bytes:
        alg = self.enc_alg
        return self.enc_key[alg.key_len:]

    def validate(self) -> None:
        """Raise SAError naming the first field that does not fit."""
        # Called per SA on control's bulk install path: each attribute is read once, the
        # algorithm entries are looked up once, and field names are only built for a failure.
        spi = self.spi
        # 1..255 are reserved for IANA in negotiation (RFC 4303 2.1), but published test packets and real
        # captures carry them, so the data plane takes any SPI but 0; negotiation keeps to >= 256 itself.
        if not isinstance(spi, int) or not 1 <= spi <= 0xFFFFFFFF:
            raise SAError("spi", "an integer from 1 to 0xffffffff (0 is reserved)", spi)
        src, dst = self.src, self.dst
        # Two addresses of one ipaddress class have one version; anything else asks the property.
        kind = type(src)
        if (kind is not type(dst) or kind not in _ADDRESS_CLASSES) and src.version != dst.version:
            raise SAError("dst", f"an IPv{src.version} address like src", str(dst))
        if self.proto != "esp":
            self._validate_ah()
        alg = ENC_ALGS.get(self.enc)
        if alg is None:
            raise SAError("enc", "one of " + ", ".join(ENC_ALGS), self.enc)
        key_len = alg.key_len + alg.salt_len
        if len(self.enc_key) != key_len:
            what = "key" if alg.aead else "cipher_key"
            extra = " (cipher key + 4-byte salt)" if alg.salt_len else ""
            raise SAError(what, f"{key_len} bytes for {alg.name}{extra}", f"{len(self.enc_key)} bytes")
        integ = self.integ
        if self.proto == "ah":
            pass        # checked by _validate_ah
        elif alg.aead:
            if integ:
                raise SAError("integrity", f"none: {alg.name} is an AEAD and carries its own ICV", integ)
        else:
            if not integ:
                raise SAError("integrity", "one of " + ", ".join(INTEG_ALGS) + f" with {alg.name}")
            integ_alg = INTEG_ALGS.get(integ)
            if integ_alg is None:
                raise SAError("integrity", "one of " + ", ".join(INTEG_ALGS), integ)
            if len(self.integ_key) != integ_alg.key_len:
                raise SAError("integrity_key", f"{integ_alg.key_len} bytes for {integ}",
                              f"{len(self.integ_key)} bytes")
        seq = self.seq
        seq_max = 0xFFFFFFFFFFFFFFFF if self.esn else 0xFFFFFFFF
        if not isinstance(seq, int) or not 1 <= seq <= seq_max + 1:
            raise SAError("seq", f"an integer from 1 to {seq_max}", seq)
        v = self.replay_window
        if not isinstance(v, int) or not 0 <= v <= REPLAY_WINDOW_MAX:
            raise SAError("replay_window", f"an integer from 0 to {REPLAY_WINDOW_MAX}", v)
        v = self.sport
        if not isinstance(v, int) or not 1 <= v <= 65535:
            raise SAError("sport", "a UDP port from 1 to 65535", v)
        v = self.dport
        if not isinstance(v, int) or not 1 <= v <= 65535:
            raise SAError("dport", "a UDP port from 1 to 65535", v)
        v = self.ttl
        if not isinstance(v, int) or not 1 <= v <= 255:
            raise SAError("ttl", "an integer from 1 to 255", v)
        if self.df not in _DF_VALUES:
            raise SAError("df", "copy, set or clear", self.df)
        v = self.dscp
        if v is not None and (not isinstance(v, int) or not 0 <= v <= 63):
            raise SAError("dscp", "copy or an integer from 0 to 63", v)
        if self.ecn not in _ECN_VALUES:
            raise SAError("ecn", "normal or compat (RFC 6040)", self.ecn)
        if self.flowlabel not in _FLOWLABEL_VALUES:
            raise SAError("flowlabel", "copy or zero", self.flowlabel)
        if len(self.local_ts) > 8:
            raise SAError("local_ts", "at most 8 traffic selectors", len(self.local_ts))
        if len(self.remote_ts) > 8:
            raise SAError("remote_ts", "at most 8 traffic selectors", len(self.remote_ts))
        limits = vars(self.lifetime)
        for v in limits.values():
            if not isinstance(v, int) or v < 0:
                name = next(k for k, x in limits.items() if x is v)
                raise SAError(f"lifetime.{name}", "a non-negative integer (0 = no limit)", v)

    def _validate_ah(self) -> None:
        """The fields an AH SA has (or must not have) that an ESP SA does not."""
        if self.proto not in PROTOCOLS:
            raise SAError("proto", "esp or ah", self.proto)
        if self.enc != "null" or self.enc_key:
            raise SAError("enc", "null with no key: AH authenticates only", self.enc)
        if self.udp_encap:
            # RFC 4302 authenticates the outer addresses, which a NAT rewrites; RFC 3948 carries only ESP.
            raise SAError("udp_encap", "false: AH cannot pass a NAT (UDP encapsulation carries ESP only)", True)
        integ = AH_INTEG_ALGS.get(self.integ or "")
        if integ is None:
            raise SAError("integrity", "one of " + ", ".join(AH_INTEG_ALGS), self.integ)
        if len(self.integ_key) != integ.key_len:
            extra = " (AES key + 4-byte salt)" if integ.salt_len else ""
            raise SAError("integrity_key", f"{integ.key_len} bytes for {integ.name}{extra}",
                          f"{len(self.integ_key)} bytes")
