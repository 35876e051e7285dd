"""Virtual address pools of a remote-access gateway: unique leases, released with their IKE SA, re-offered
to the identity that held them (docs/remote-access.md).

A pool is a range of addresses handed out in order; a lease belongs to one identity and is *online* while
an IKE SA (its initiator SPI, the owner) holds it.  When the last owner goes the lease stays, offline, so
the identity gets the same address when it comes back; an offline lease of another identity is taken
over only when no address was ever unused.  ``Pools`` answers the IKE core's ``AddressProvider``.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from control.ike.cp import IPAddress, Lease

if TYPE_CHECKING:
    from control.config.model import Config


class PoolError(ValueError):
    """A pool's addresses do not parse (the config checker reports it with the file and field)."""


def parse_range(text: str) -> tuple[IPAddress, IPAddress]:
    """``10.99.0.0/24`` (without its network and IPv4 broadcast address), ``10.99.0.10-10.99.0.200`` or
    ``fd00::10-fd00::ff``: the first and last address a pool hands out."""
    text = text.strip()
    try:
        if "-" in text:
            a, _, b = text.partition("-")
            lo, hi = ipaddress.ip_address(a.strip()), ipaddress.ip_address(b.strip())
        else:
            net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise PoolError(f"{text!r}: {exc}") from None
    if "-" in text:
        if lo.version != hi.version:
            raise PoolError(f"{text!r}: both ends must be of one IP version")
        if int(hi) < int(lo):
            raise PoolError(f"{text!r}: the range ends before it starts")
        return lo, hi
    if net.num_addresses == 1:
        return net.network_address, net.network_address
    # the network address (and IPv4's broadcast) are no host's: clients treat them badly
    last = net.broadcast_address - 1 if net.version == 4 and net.num_addresses > 2 else net.broadcast_address
    return net.network_address + 1, last


def pool_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The prefixes that cover a pool (what the gateway routes towards its clients): a subnet as written,
    a range as the fewest prefixes."""
    if "-" not in text:
        return [ipaddress.ip_network(text.strip(), strict=False)]
    return list(ipaddress.summarize_address_range(*parse_range(text)))


@dataclass
class PoolLease:
    address: IPAddress
    identity: str
    owners: set[bytes] = field(default_factory=set)

    @property
    def online(self) -> bool:
        return bool(self.owners)


class Pool:
    """One named range; addresses are leased in order, then offline leases are reclaimed oldest first."""

    def __init__(self, name: str, addrs: str, dns: list[IPAddress] | None = None):
        self.name = name
        self.addrs = addrs
        self.first, self.last = parse_range(addrs)
        self.version = self.first.version
        self.dns = tuple(dns or ())
        self.size = int(self.last) - int(self.first) + 1
        self._next = 0                                  # offsets below this were leased at least once
        self.leases: dict[IPAddress, PoolLease] = {}    # insertion order: oldest first
        self._by_identity: dict[str, PoolLease] = {}
        # owner -> its leases: an IKE SA's release must not scan a big pool (100k leases: 4 ms a scan)
        self._by_owner: dict[bytes, list[PoolLease]] = {}
        self.refused = 0

    @property
    def used(self) -> int:
        return sum(1 for lease in self.leases.values() if lease.online)

    def acquire(self, identity: str, owner: bytes) -> Lease | None:
        lease = self._by_identity.get(identity)
        if lease is None:
            lease = self._fresh(identity)
            if lease is None:
                self.refused += 1
                return None
        self._own(lease, owner)
        return Lease(lease.address, self.name, self.dns)

    def _own(self, lease: PoolLease, owner: bytes) -> None:
        if owner not in lease.owners:
            lease.owners.add(owner)
            self._by_owner.setdefault(owner, []).append(lease)

    def _fresh(self, identity: str) -> PoolLease | None:
        if self._next < self.size:
            addr = ipaddress.ip_address(int(self.first) + self._next)
            self._next += 1
        else:
            old = next((x for x in self.leases.values() if not x.online), None)
            if old is None:
                return None
            # the identity that held it loses its claim: re-offering is a courtesy, not a reservation
            del self.leases[old.address], self._by_identity[old.identity]
            addr = old.address
        lease = PoolLease(addr, identity)
        self.leases[addr] = self._by_identity[identity] = lease
        return lease

    def release(self, owner: bytes) -> list[IPAddress]:
        out = []
        for lease in self._by_owner.pop(owner, []):
            lease.owners.discard(owner)
            if not lease.online:
                out.append(lease.address)
        return out

    def transfer(self, old: bytes, new: bytes) -> None:
        for lease in self._by_owner.pop(old, []):
            lease.owners.discard(old)
            self._own(lease, new)

    def adopt(self, address: IPAddress, identity: str, owner: bytes) -> bool:
        """Take back a lease an IKE SA already holds (restored state); False if it is not ours or taken."""
        if address.version != self.version or not int(self.first) <= int(address) <= int(self.last):
            return False
        lease = self.leases.get(address)
        if lease is not None and lease.identity != identity:
            return False
        if lease is None:
            stale = self._by_identity.pop(identity, None)
            if stale is not None and not stale.online:
                del self.leases[stale.address]
            lease = self.leases[address] = self._by_identity[identity] = PoolLease(address, identity)
            # addresses below the adopted one stay unused ones: count from the highest offset handed out
            self._next = max(self._next, int(address) - int(self.first) + 1)
        self._own(lease, owner)
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "addrs": self.addrs, "size": self.size, "used": self.used,
                "dns": [str(d) for d in self.dns],
                "leases": [{"address": str(x.address), "identity": x.identity, "online": x.online}
                           for x in self.leases.values()]}


class Pools:
    """Every pool of the configuration by name; the IKE core's ``AddressProvider``."""

    def __init__(self, pools: list[Pool] | None = None):
        self.pools: dict[str, Pool] = {p.name: p for p in pools or []}

    def acquire(self, pools: tuple[str, ...], identity: str, version: int, owner: bytes,
                hint: IPAddress | None = None) -> Lease | None:
        wanted = [self.pools[n] for n in pools if n in self.pools and self.pools[n].version == version]
        # the identity's own address first, wherever it is, so a returning client keeps it
        for pool in itertools.chain((p for p in wanted if identity in p._by_identity), wanted):
            lease = pool.acquire(identity, owner)
            if lease is not None:
                return lease
        return None

    def release(self, owner: bytes) -> list[IPAddress]:
        """Every address ``owner`` held that is now offline."""
        return [a for p in self.pools.values() for a in p.release(owner)]

    def transfer(self, old: bytes, new: bytes) -> None:
        """An IKE rekey: the new IKE SA (``new`` SPI) holds what the old one held."""
        for p in self.pools.values():
            p.transfer(old, new)

    def adopt(self, address: IPAddress, identity: str, owner: bytes, pools: tuple[str, ...]) -> bool:
        return any(self.pools[n].adopt(address, identity, owner) for n in pools if n in self.pools)

    def reconfigure(self, pools: list[Pool]) -> None:
        """A reload: unchanged pools keep their leases; a changed or new one starts empty."""
        out = {}
        for p in pools:
            old = self.pools.get(p.name)
            out[p.name] = old if old is not None and (old.addrs, old.dns) == (p.addrs, p.dns) else p
        self.pools = out

    def as_list(self) -> list[dict[str, Any]]:
        return [p.as_dict() for p in self.pools.values()]


def pools_of(config: Config) -> list[Pool]:
    """The runtime pools of a checked configuration's ``pools:`` section."""
    return [Pool(s.name, s.addrs, list(s.dns)) for s in config.pools.values()]


def pools_text(pools: list[dict[str, Any]]) -> str:
    """``ipsecgw list-pools`` without --json."""
    if not pools:
        return "no pools configured"
    lines = []
    for p in pools:
        lines.append(f"{p['name']}: {p['addrs']}  size {p['size']}  used {p['used']}"
                     + (f"  dns {', '.join(p['dns'])}" if p["dns"] else ""))
        for x in p["leases"]:
            lines.append(f"  {x['address']:<18} {x['identity']:<32} {'online' if x['online'] else 'offline'}")
    return "\n".join(lines)


__all__ = ["PoolError", "parse_range", "pool_networks", "PoolLease", "Pool", "Pools", "pools_of", "pools_text"]
