"""Configuration payloads (RFC 7296 §3.15): the attributes a remote-access client asks for and gets.

``CPPayload`` (control.ike.payloads) carries raw (type, value) attributes; this module gives them their
meaning: a request names what it wants (usually with empty values), a reply carries the virtual address,
the DNS servers and the protected subnets.  Values that do not decode are a ParseError, so a peer's bad
reply is a clear error rather than an address that is none.

The lease itself is decided outside the core: ``AddressProvider`` is the small interface the responder
asks (the daemon's control/pools.py answers it), so the core stays sans-IO and knows no pool.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from control.ike.payloads import CPPayload, ParseError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CfgType(enum.IntEnum):
    REQUEST = 1
    REPLY = 2
    SET = 3
    ACK = 4


class CfgAttr(enum.IntEnum):
    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15


_A4, _A6 = int(CfgAttr.INTERNAL_IP4_ADDRESS), int(CfgAttr.INTERNAL_IP6_ADDRESS)
_D4, _D6 = int(CfgAttr.INTERNAL_IP4_DNS), int(CfgAttr.INTERNAL_IP6_DNS)
_S4, _S6 = int(CfgAttr.INTERNAL_IP4_SUBNET), int(CfgAttr.INTERNAL_IP6_SUBNET)
_MASK4 = int(CfgAttr.INTERNAL_IP4_NETMASK)


@dataclass
class ConfigReply:
    """What a CFG_REPLY says (or what a responder puts into one)."""

    addresses: list[IPAddress] = field(default_factory=list)
    dns: list[IPAddress] = field(default_factory=list)
    subnets: list[IPNetwork] = field(default_factory=list)


@dataclass(frozen=True)
class Lease:
    """One address an ``AddressProvider`` granted, with the DNS servers of its pool."""

    address: IPAddress
    pool: str
    dns: tuple[IPAddress, ...] = ()


class AddressProvider(Protocol):
    """Where the responder's leases come from (the daemon's pools); the core only asks."""

    def acquire(self, pools: tuple[str, ...], identity: str, version: int, owner: bytes,
                hint: IPAddress | None = None) -> Lease | None:
        """An address of IP ``version`` from the first of ``pools`` with one free for ``identity``
        (the same one it had, if it is still free), held by ``owner`` (the IKE SA's initiator SPI);
        None when every pool is exhausted."""
        ...


def request(versions: list[int]) -> CPPayload:
    """CFG_REQUEST for one address of each IP version, and the DNS servers of that family."""
    attrs: list[tuple[int, bytes]] = []
    for v in versions:
        attrs += [(_A4, b""), (_D4, b"")] if v == 4 else [(_A6, b""), (_D6, b"")]
    return CPPayload(CfgType.REQUEST, attrs)


def requested_versions(cp: CPPayload) -> list[int]:
    """Which address families a CFG_REQUEST asks an address for (in its order, each once)."""
    out: list[int] = []
    for t, _ in cp.attributes:
        v = 4 if t == _A4 else 6 if t == _A6 else 0
        if v and v not in out:
            out.append(v)
    return out


def _addr(t: int, value: bytes) -> IPAddress:
    try:
        if t in (_A4, _D4):
            # RFC 7296 §3.15.1: an IPv4 address, 4 octets
            if len(value) != 4:
                raise ValueError(f"{len(value)} bytes")
            return ipaddress.IPv4Address(value)
        # INTERNAL_IP6_ADDRESS is an address and a prefix length (17 octets); IP6_DNS 16
        if len(value) != (17 if t == _A6 else 16):
            raise ValueError(f"{len(value)} bytes")
        return ipaddress.IPv6Address(value[:16])
    except ValueError as exc:
        raise ParseError(f"configuration attribute {CfgAttr(t).name}: {exc}") from None


def _subnet(t: int, value: bytes) -> IPNetwork:
    try:
        if t == _S4:
            # address and netmask, 8 octets
            if len(value) != 8:
                raise ValueError(f"{len(value)} bytes")
            return ipaddress.IPv4Network((value[:4], str(ipaddress.IPv4Address(value[4:]))), strict=False)
        if len(value) != 17 or value[16] > 128:
            raise ValueError(f"{len(value)} bytes")
        return ipaddress.IPv6Network((value[:16], value[16]), strict=False)
    except ValueError as exc:
        raise ParseError(f"configuration attribute {CfgAttr(t).name}: {exc}") from None


def parse_reply(cp: CPPayload) -> ConfigReply:
    """The addresses, DNS servers and subnets of a CFG_REPLY; unknown attributes are skipped (§3.15.1)."""
    if cp.cfg_type != CfgType.REPLY:
        raise ParseError(f"configuration payload of type {cp.cfg_type}, expected CFG_REPLY")
    out = ConfigReply()
    for t, v in cp.attributes:
        if t in (_A4, _A6):
            out.addresses.append(_addr(t, v))
        elif t in (_D4, _D6):
            out.dns.append(_addr(t, v))
        elif t in (_S4, _S6):
            out.subnets.append(_subnet(t, v))
    return out


def reply(cfg: ConfigReply) -> CPPayload:
    """CFG_REPLY with the leased addresses (IPv6 as a /128), DNS servers and protected subnets."""
    attrs: list[tuple[int, bytes]] = []
    for a in cfg.addresses:
        if a.version == 4:
            # the netmask of a point-to-point address: strongSwan and Windows accept it alike
            attrs += [(_A4, a.packed), (_MASK4, b"\xff\xff\xff\xff")]
        else:
            attrs.append((_A6, a.packed + bytes([128])))
    for d in cfg.dns:
        attrs.append((_D4 if d.version == 4 else _D6, d.packed))
    for n in cfg.subnets:
        if n.version == 4:
            attrs.append((_S4, n.network_address.packed + n.netmask.packed))
        else:
            attrs.append((_S6, n.network_address.packed + bytes([n.prefixlen])))
    return CPPayload(CfgType.REPLY, attrs)


__all__ = ["CfgType", "CfgAttr", "ConfigReply", "Lease", "AddressProvider", "request", "requested_versions",
           "parse_reply", "reply"]
