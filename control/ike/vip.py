"""Virtual IPs in IKE_AUTH (RFC 7296 §2.19, §3.15): the responder leasing addresses for a CFG_REQUEST,
the initiator asking for and taking them, and the traffic selectors narrowed to a lease.

The lease is the ``AddressProvider``'s decision (the daemon's pools); this module only asks it, so
the core stays sans-IO.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from control.ike import cp
from control.ike.config import ChildConfig
from control.ike.constants import Notify
from control.ike.events import IkeError
from control.ike.message import Message
from control.ike.payloads import CPPayload, ParseError, Payload
from control.ike.ts_payload import TrafficSelectorEntry

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


def _cfg(msg: Message) -> CPPayload | None:
    p = msg.get(CPPayload)
    return p if isinstance(p, CPPayload) else None


def lease_for_request(sa: IkeSA, msg: Message) -> tuple[list[Payload], bool]:
    """The CFG_REPLY for the initiator's CFG_REQUEST (if any), and whether no address could be leased
    (then the CHILD SA is refused with INTERNAL_ADDRESS_FAILURE, §3.15.4).  Leases go to ``sa.vips``."""
    req = _cfg(msg)
    cfg = sa.config
    if req is None or req.cfg_type != cp.CfgType.REQUEST or not cfg.pools or cfg.addresses is None:
        return [], False        # no pool here: the request is ignored, as §3.15.4 allows
    versions = cp.requested_versions(req)
    if not versions:
        return [], False
    assert sa.remote_identity is not None
    identity = str(sa.remote_identity)
    dns: list[cp.IPAddress] = []
    for v in versions:
        lease = cfg.addresses.acquire(cfg.pools, identity, v, sa.our_spi)
        if lease is not None:
            sa.vips.append(lease.address)
            dns += [d for d in lease.dns if d not in dns]
    if not sa.vips:
        sa.stats["cp_address_failure"] += 1
        return [], True
    subnets = [n for c in cfg.children[:1] for ts in c.local_ts
               for n in ipaddress.summarize_address_range(ts.start, ts.end)]
    return [cp.reply(cp.ConfigReply(list(sa.vips), dns, subnets))], False


def remote_policy(sa: IkeSA, child: ChildConfig) -> list[TrafficSelectorEntry]:
    """What the initiator's selectors (TSi) narrow to: the lease for ``remote_ts: [dynamic]``."""
    if not child.remote_dynamic:
        return child.remote_ts
    hosts = sa.vips or [ipaddress.ip_address(sa.remote[0])]
    return [TrafficSelectorEntry(a, a) for a in hosts]


def request_payloads(sa: IkeSA) -> list[Payload]:
    """Our CFG_REQUEST as initiator, when the connection asks for virtual IPs."""
    return [cp.request(list(sa.config.vips))] if sa.config.vips else []


def take_reply(sa: IkeSA, msg: Message) -> None:
    """The addresses and DNS servers the responder's CFG_REPLY gave us, of the versions we asked for."""
    if not sa.config.vips:
        return
    got = _cfg(msg)
    if got is None:
        return
    try:
        parsed = cp.parse_reply(got)
    except ParseError as exc:
        raise IkeError(Notify.INVALID_SYNTAX, f"configuration payload: {exc}") from None
    sa.vips = [a for a in parsed.addresses if a.version in sa.config.vips]
    sa.dns = parsed.dns


__all__ = ["lease_for_request", "remote_policy", "request_payloads", "take_reply"]
