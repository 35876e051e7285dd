"""The top-level ``pools:`` section (swanctl's pools): named address ranges with their DNS servers, into
``PoolSpec``; and the check that each connection's ``pools`` names one of them."""

from __future__ import annotations

import ipaddress

from control.config.checker import Checker, describe
from control.config.model import ConnectionConfig, PoolSpec
from control.config.yaml_tree import Node
from control.pools import PoolError, parse_range

_POOL_KEYS = ("addrs", "dns")
_ADDRS = "a subnet (10.99.0.0/24), a range (10.99.0.10-10.99.0.200) or an IPv6 one (fd00:99::/112)"


def parse_pools(ck: Checker, node: Node | None) -> tuple[dict[str, PoolSpec], set[str]]:
    """The valid pools, and the names of all (a connection naming a broken pool is not a second error)."""
    out: dict[str, PoolSpec] = {}
    if node is None:
        return out, set()
    entries = ck.mapping(node, "pools", None)
    for name, pnode in entries.items():
        path = f"pools.{name}"
        m = ck.mapping(pnode, path, _POOL_KEYS)
        if not isinstance(pnode.value, dict):
            continue
        if "addrs" not in m:
            ck.error(pnode, f"{path}.addrs", _ADDRS, "nothing")
            continue
        text = m["addrs"].value
        if not isinstance(text, str):
            ck.error(m["addrs"], f"{path}.addrs", _ADDRS, describe(text))
            continue
        try:
            first, _ = parse_range(text)
        except PoolError as exc:
            ck.error(m["addrs"], f"{path}.addrs", _ADDRS, str(exc))
            continue
        dns = []
        if "dns" in m:
            for t, item, p in ck.str_list(m["dns"], f"{path}.dns", comma=True):
                try:
                    dns.append(ipaddress.ip_address(t))
                except ValueError:
                    ck.error(item, p, "an IP address of a DNS server", repr(t))
        out[name] = PoolSpec(name, text.strip(), first.version, dns)
    return out, set(entries)


def check_conn_pools(ck: Checker, conn_node: Node, conn: ConnectionConfig, names: set[str]) -> None:
    """Each name in ``connections.<name>.pools`` is a pool of the ``pools:`` section."""
    for name in conn.pools:
        if name not in names:
            known = ", ".join(sorted(names)) or "none configured"
            ck.error(conn_node.value.get("pools", conn_node), f"connections.{conn.name}.pools",
                     f"the name of a pool in the pools section ({known})", repr(name))
