"""One entry of ``connections:``: addresses, ports, IKE proposals, timers, fragmentation, the two auth
sections and the children, into ``ConnectionConfig``."""

from __future__ import annotations

import ipaddress

from control.config.auth_section import parse_auth, parse_pubkey_material
from control.config.checker import Checker, describe
from control.config.child_section import parse_child
from control.config.model import ConnectionConfig, GatewayConfig
from control.config.validators import parse_proposal_list
from control.config.yaml_tree import Node
from control.ike.certs import dn_to_string

_CONN_KEYS = ("local_addrs", "remote_addrs", "remote_port", "remote_natt_port", "proposals", "encap", "dpd_delay",
              "rekey_time", "reauth_time", "over_time", "rand_time", "local", "remote", "children", "version", "mobike",
              "fragmentation", "fragment_size", "pools", "vips")


def _addrs(ck: Checker, node: Node, path: str, allow_any: bool) -> list[str]:
    out = []
    for text, item, p in ck.str_list(node, path, comma=True):
        if allow_any and text in ("%any", "%any4", "%any6"):
            out.append("%any")
            continue
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            ck.error(item, p, "an IP address" + (" or %any" if allow_any else "")
                     + " (host names are not resolved)", repr(text))
    return out


def _fragmentation(ck: Checker, m: dict[str, Node], path: str, conn: ConnectionConfig) -> None:
    """fragmentation (yes | accept | force | no, as swanctl) and fragment_size (RFC 7383, docs/ike.md)."""
    if "fragmentation" in m:
        node = m["fragmentation"]
        v = node.value
        # YAML 1.1 reads a bare yes/no as a boolean
        mode = ("yes" if v else "no") if isinstance(v, bool) else (v.strip().lower() if isinstance(v, str) else None)
        if mode in ("yes", "accept", "force", "no"):
            conn.fragmentation = mode
        else:
            ck.error(node, f"{path}.fragmentation", "one of yes, accept, force, no", describe(v))
    if "fragment_size" in m:
        what = "0 (576 bytes over IPv4, 1280 over IPv6) or an IP datagram size from 280 to 65535 bytes"
        n = ck.integer(m["fragment_size"], f"{path}.fragment_size", 0, 65535, what)
        if n is not None and 0 < n < 280:
            ck.error(m["fragment_size"], f"{path}.fragment_size", what, str(n))
        elif n is not None:
            conn.fragment_size = n


def _remote_access(ck: Checker, m: dict[str, Node], path: str, conn: ConnectionConfig) -> None:
    """pools (responder: virtual IPs from these) and vips (initiator: ask for 0.0.0.0 and/or ::)."""
    if "pools" in m:
        conn.pools = [t for t, _, _ in ck.str_list(m["pools"], f"{path}.pools", comma=True)]
    if "vips" in m:
        for text, item, p in ck.str_list(m["vips"], f"{path}.vips", comma=True):
            v = {"0.0.0.0": 4, "::": 6}.get(text)
            if v is None:
                # a specific address to ask for is not offered: RFC 7296 §3.15.1 lets the responder ignore it
                ck.error(item, p, "0.0.0.0 (ask for an IPv4 address) or :: (an IPv6 one)", repr(text))
            elif v not in conn.vips:
                conn.vips.append(v)


def parse_connection(ck: Checker, name: str, node: Node, gw: GatewayConfig) -> ConnectionConfig | None:
    path = f"connections.{name}"
    m = ck.mapping(node, path, _CONN_KEYS)
    if not isinstance(node.value, dict):
        return None
    conn = ConnectionConfig(name, [], ["%any"], "", None, ["aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048"],
                            [])
    if "local_addrs" in m:
        conn.local_addrs = _addrs(ck, m["local_addrs"], f"{path}.local_addrs", allow_any=True)
        if "%any" in conn.local_addrs and len(conn.local_addrs) > 1:
            ck.error(m["local_addrs"], f"{path}.local_addrs", "either addresses or %any alone",
                     ", ".join(conn.local_addrs))
    else:
        conn.local_addrs = ["%any"]     # as swanctl: every local address; the route picks the source
    if "remote_addrs" in m:
        conn.remote_addrs = _addrs(ck, m["remote_addrs"], f"{path}.remote_addrs", allow_any=True)
    if "version" in m and ck.integer(m["version"], f"{path}.version", 0, 2, "2 (IKEv2)") not in (None, 0, 2):
        ck.error(m["version"], f"{path}.version", "2 (only IKEv2 is spoken)", describe(m["version"].value))
    if "mobike" in m and ck.boolean(m["mobike"], f"{path}.mobike"):
        ck.error(m["mobike"], f"{path}.mobike", "no (MOBIKE is not supported)", "yes")
    for key in ("remote_port", "remote_natt_port"):
        if key in m:
            p = ck.integer(m[key], f"{path}.{key}", 1, 65535, "a UDP port from 1 to 65535")
            if p is not None:
                setattr(conn, key, p)
    if "proposals" in m:
        conn.proposals = parse_proposal_list(ck, m["proposals"], f"{path}.proposals", "ike")
    if "encap" in m:
        conn.encap = bool(ck.boolean(m["encap"], f"{path}.encap"))
    _fragmentation(ck, m, path, conn)
    _remote_access(ck, m, path, conn)
    for key in ("dpd_delay", "rekey_time", "reauth_time", "over_time", "rand_time"):
        if key in m:
            d = ck.duration(m[key], f"{path}.{key}")
            if d is not None:
                setattr(conn, key, d)
    for key in ("rekey_time", "reauth_time"):
        t = getattr(conn, key)
        if key in m and conn.rand_time is not None and t and conn.rand_time >= t:
            ck.error(m["rand_time"], f"{path}.rand_time", f"less than {key} ({t}s)", f"{conn.rand_time}s")
    conn.local_auth, local_id = parse_auth(ck, m.get("local"), f"{path}.local", required_id=False)
    conn.remote_auth, conn.remote_id = parse_auth(ck, m.get("remote"), f"{path}.remote", required_id=False)
    conn.credentials, cas_l, conn.rsa_pss = parse_pubkey_material(ck, m.get("local"), f"{path}.local",
                                                                  conn.local_auth, True)
    _, cas_r, _ = parse_pubkey_material(ck, m.get("remote"), f"{path}.remote", conn.remote_auth, False)
    conn.cacerts = cas_l + cas_r
    if conn.remote_auth == "pubkey" and not conn.cacerts and "remote" in m:
        ck.error(m["remote"], f"{path}.remote.cacerts", "the CA certificate(s) the peer's certificate must "
                 "chain to (auth: pubkey)", "nothing")
    if local_id is None and conn.credentials is not None:
        # as strongSwan: with a certificate, its subject is the default identity
        local_id = dn_to_string(conn.credentials.cert.subject.public_bytes())
    if local_id is None and conn.local_addrs and conn.local_addrs[0] != "%any":
        local_id = conn.local_addrs[0]      # as strongSwan: the address is the default identity
    # with %any and no id, the address each IKE SA actually uses is the identity (ike_config(local_ip=...))
    conn.local_id = local_id or ""
    if "children" not in m:
        ck.error(node, f"{path}.children", "at least one child (CHILD SA) with local_ts and remote_ts", "nothing")
    else:
        kids = ck.mapping(m["children"], f"{path}.children", None)
        if isinstance(m["children"].value, dict) and not kids:
            ck.error(m["children"], f"{path}.children", "at least one child", "an empty mapping")
        for cname, cnode in kids.items():
            c = parse_child(ck, cname, cnode, f"{path}.children.{cname}")
            if c is not None and c.local_dynamic and not conn.vips:
                ck.error(kids[cname].value.get("local_ts"), f"{path}.children.{cname}.local_ts",
                         "subnets (local_ts: dynamic needs vips on the connection)", "dynamic")
            if c is not None:
                conn.children.append(c)
        if not conn.can_initiate:
            for c in conn.children:
                if c.start_action != "none":
                    ck.error(kids[c.name].value.get("start_action"), f"{path}.children.{c.name}.start_action",
                             "none: remote_addrs is %any, so there is no peer to initiate to", repr(c.start_action))
    return conn
