"""The fastpath's start-up input (fastpath.plan.FastpathPlan), resolved from control's configuration.

These read the connections, which only control knows; the fastpath gets the answers as plain data.
"""

from __future__ import annotations

import ipaddress

from control.config import Config
from control.pools import pool_networks
from fastpath.classify import inner_mtu
from fastpath.io.tun import remote_routes
from fastpath.plan import FastpathPlan

__all__ = ["fastpath_plan", "ipv6_outer", "auto_tun_mtu", "tun_routes"]


def ipv6_outer(config: Config) -> bool:
    """May any connection run over IPv6?  Yes if an address on either side is IPv6, or a connection has
    no literal address at all (%any on both sides: either family)."""
    for c in config.connections.values():
        lit = [a for a in (*c.local_addrs, *c.remote_addrs) if a != "%any"]
        if not lit or any(ipaddress.ip_address(a).version == 6 for a in lit):
            return True
    return False


def auto_tun_mtu(config: Config) -> int:
    """Outer MTU minus the largest ESP overhead any configured child may negotiate (UDP encapsulation
    counted, since NAT detection or the peer can turn it on; the outer header is IPv6's 40 bytes if any
    connection may run over IPv6: one TUN serves them all)."""
    outer = config.gateway.fastpath.outer_mtu
    ip = 40 if ipv6_outer(config) else 20
    worst = outer
    for conn in config.connections.values():
        for child in conn.children:
            for prop in child.esp_proposals:
                aead = any(k in prop for k in ("gcm", "gmac", "chacha", "ccm"))
                iv, icv, blk = (8, 16, 4) if aead else (16, 32, 16)
                worst = min(worst, inner_mtu(outer, ip + 8 + 8 + iv + icv, blk))
    return worst if worst < outer else inner_mtu(outer, ip + 8 + 8 + 16 + 32, 16)


def tun_routes(config: Config) -> list[str]:
    """The remote selectors of every child as CIDR prefixes: what the fastpath routes into its TUN (or
    blackholes), and what a reload moves."""
    nets = []
    for conn in config.connections.values():
        for child in conn.children:
            if child.remote_dynamic:
                # the peers' addresses are the leases: route the pools (a peer's IKE address, which
                # dynamic means without a pool, must never go into the TUN)
                for name in conn.pools:
                    if name in config.pools:
                        nets.extend(str(n) for n in pool_networks(config.pools[name].addrs))
                continue
            for ts in child.remote_ts:
                nets.extend(str(n) for n in ipaddress.summarize_address_range(ts.start, ts.end))
    return remote_routes(nets)


def fastpath_plan(config: Config) -> FastpathPlan:
    """What ``ipsecgw fastpath`` hands the fastpath (kernel or DPDK I/O) for this configuration."""
    gw, fp = config.gateway, config.gateway.fastpath
    conns = config.connections.values()
    local = sorted({a for c in conns for a in c.local_addrs if a != "%any"})
    peers = dict.fromkeys(a for c in conns for a in c.remote_addrs if a != "%any")
    return FastpathPlan(settings=fp, shm_path=gw.shm_path, ike_port=gw.ike_port, natt_port=gw.natt_port,
                        local_addrs=tuple(local), peer_addrs=tuple(peers), ipv6_outer=ipv6_outer(config),
                        routes=tuple(tun_routes(config)), tun_mtu=fp.tun_mtu or auto_tun_mtu(config))
