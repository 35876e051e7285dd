"""``parse_config`` and ``load_config``: the sections read in order, then what spans them (child names
unique across connections, each PSK connection's secret found), all problems raised as one ConfigError."""

from __future__ import annotations

import sys
from pathlib import Path

from control.config.checker import Checker
from control.config.connection_section import parse_connection
from control.config.errors import ConfigError
from control.config.gateway_section import parse_gateway
from control.config.model import Config, ConnectionConfig
from control.config.pools_section import check_conn_pools, parse_pools
from control.config.secrets_section import find_psk, parse_secrets
from control.config.yaml_tree import compose


def parse_config(text: str, file: str = "<config>") -> Config:
    """Check and convert a configuration text; ``file`` names it in messages."""
    tree = compose(text, file)
    ck = Checker(file)
    if tree is None:
        raise ConfigError([f"{file}: the file is empty: expected gateway, connections and secrets sections"])
    top = ck.mapping(tree, "", ("gateway", "connections", "secrets", "pools"))
    gw = parse_gateway(ck, top.get("gateway"))
    conns: dict[str, ConnectionConfig] = {}
    if "connections" not in top:
        ck.error(tree, "connections", "at least one connection", "nothing")
    else:
        for name, cnode in ck.mapping(top["connections"], "connections", None).items():
            c = parse_connection(ck, name, cnode, gw)
            if c is not None:
                conns[name] = c
    secrets = parse_secrets(ck, top.get("secrets"))
    pools, pool_names = parse_pools(ck, top.get("pools"))
    for conn in conns.values():
        check_conn_pools(ck, top["connections"].value[conn.name], conn, pool_names)
    child_names: dict[str, str] = {}
    for conn in conns.values():
        for c in conn.children:
            if c.name in child_names:
                ck.error(top["connections"].value[conn.name].value["children"].value[c.name],
                         f"connections.{conn.name}.children.{c.name}",
                         f"a child name not used elsewhere (connection {child_names[c.name]} has one)", repr(c.name))
            child_names[c.name] = conn.name
        if "psk" in (conn.local_auth, conn.remote_auth) and (conn.local_id or conn.any_local):
            # local_addrs %any without an id: our identity is whichever address is used, so the secret
            # is found by the peer's id (or is one without ids)
            psk = find_psk(secrets, conn.local_id, conn.remote_id)
            if psk is None:
                names = " or ".join(i for i in (conn.local_id, conn.remote_id) if i)
                ck.error(top["connections"].value[conn.name], f"connections.{conn.name}",
                         "a secrets entry (ike-...)" + (f" whose id names {names}" if names else "")
                         + ", or one without ids", "no matching pre-shared key")
            else:
                conn.psk = psk
    if ck.problems:
        raise ConfigError(ck.problems)
    return Config(file, gw, conns, secrets, pools)


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not a text file (UTF-8 expected)"]) from None
    return parse_config(text, str(p))


def load_config_or_report(path: str | Path) -> Config | None:
    """load_config for a command: None after printing every problem to stderr, one a line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None
