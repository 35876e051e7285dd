"""Quick mode's client identities (RFC 2409 §5.5, RFC 2407 §4.6.2) as traffic selectors and back."""

from __future__ import annotations

import ipaddress

from control.ike.ts_payload import TrafficSelectorEntry
from control.ikev1.codec import DecodeError, IDPayload
from control.ikev1.constants import IdType


def ts_to_id(ts: TrafficSelectorEntry) -> IDPayload:
    v4 = ts.start.version == 4
    if ts.start_port == ts.end_port:
        port = ts.start_port
    elif (ts.start_port, ts.end_port) == (0, 65535):
        port = 0
    else:
        raise ValueError(f"IKEv1 client IDs carry one port or all, not {ts.start_port}-{ts.end_port}")
    if ts.start == ts.end:
        return IDPayload(IdType.IPV4_ADDR if v4 else IdType.IPV6_ADDR, ts.start.packed, ts.proto, port)
    nets = list(ipaddress.summarize_address_range(ts.start, ts.end))
    if len(nets) == 1:
        net = nets[0]
        return IDPayload(IdType.IPV4_ADDR_SUBNET if v4 else IdType.IPV6_ADDR_SUBNET,
                         net.network_address.packed + net.netmask.packed, ts.proto, port)
    return IDPayload(IdType.IPV4_ADDR_RANGE if v4 else IdType.IPV6_ADDR_RANGE, ts.start.packed + ts.end.packed,
                     ts.proto, port)


def id_to_ts(p: IDPayload) -> TrafficSelectorEntry:
    """The selector a client ID names; another ID type (or a bad length) raises DecodeError."""
    t, d = p.id_type, p.data
    size = 4 if t in (IdType.IPV4_ADDR, IdType.IPV4_ADDR_SUBNET, IdType.IPV4_ADDR_RANGE) else 16
    if t not in (IdType.IPV4_ADDR, IdType.IPV6_ADDR, IdType.IPV4_ADDR_SUBNET, IdType.IPV6_ADDR_SUBNET,
                 IdType.IPV4_ADDR_RANGE, IdType.IPV6_ADDR_RANGE):
        raise DecodeError(f"client ID type {t} is not an address, subnet or range")
    want = size if t in (IdType.IPV4_ADDR, IdType.IPV6_ADDR) else 2 * size
    if len(d) != want:
        raise DecodeError(f"client ID of type {t} has {len(d)} bytes, not {want}")
    lo, hi = (p.port, p.port) if p.port else (0, 65535)
    a = ipaddress.ip_address(d[:size])
    if t in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return TrafficSelectorEntry(a, a, p.protocol, lo, hi)
    if t in (IdType.IPV4_ADDR_RANGE, IdType.IPV6_ADDR_RANGE):
        b = ipaddress.ip_address(d[size:])
        if int(b) < int(a):
            raise DecodeError("client ID range ends before it starts")
        return TrafficSelectorEntry(a, b, p.protocol, lo, hi)
    try:
        net = ipaddress.ip_network(f"{a}/{ipaddress.ip_address(d[size:])}", strict=False)
    except ValueError:
        raise DecodeError("client ID subnet mask is not contiguous") from None
    return TrafficSelectorEntry(net[0], net[-1], p.protocol, lo, hi)


def host_ts(addr: str) -> TrafficSelectorEntry:
    a = ipaddress.ip_address(addr)
    return TrafficSelectorEntry(a, a)
