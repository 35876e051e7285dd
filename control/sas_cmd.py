"""Operator verbs on a running daemon: list-sas, initiate, terminate, rekey, export-keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from control.config import ConfigError, GatewayConfig, load_config
from control.ctl import ControlError, call

ENV_SOCKET = "IPSECGW_SOCKET"


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-c", "--config", metavar="CONFIG.yaml", help="find the control socket in this configuration")
    g.add_argument("--socket", metavar="PATH", help=f"the control socket (default: ${ENV_SOCKET} or "
                                                     f"{GatewayConfig().control_socket})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list-sas", help="IKE SAs and CHILD SAs of the running daemon",
                       description="Show IKE SAs (peer, identities, proposal, SPIs, state, rekey time) and their "
                                   "CHILD SAs (proposal, SPIs, shared-memory slots, traffic selectors, times).")
    _add_target(p)
    p.add_argument("--json", action="store_true", help="print the daemon's JSON")
    p.set_defaults(func=_list_sas)
    for verb, text in (("initiate", "negotiate a connection or one of its children"),
                       ("terminate", "delete a connection's IKE SA(s) or a child's CHILD SA(s)"),
                       ("rekey", "rekey a connection's IKE SA(s) or a child's CHILD SA(s)")):
        v = sub.add_parser(verb, help=text, description=f"{text[0].upper()}{text[1:]}. NAME is a connection or a "
                                                          "child name from the configuration.")
        v.add_argument("name", metavar="NAME")
        _add_target(v)
        v.add_argument("--json", action="store_true")
        v.set_defaults(func=_verb, verb=verb)
    e = sub.add_parser("export-keys", help="print SA keys for Wireshark (root only, off unless enabled)",
                       description="Print the IKE and ESP keys of the live SAs in Wireshark's "
                                   "ikev2_decryption_table and esp_sa formats (as strongSwan's save-keys). Needs "
                                   "root and gateway.export_keys: yes. Anyone holding the output can decrypt the "
                                   "traffic.")
    e.add_argument("--format", choices=("wireshark",), default="wireshark")
    e.add_argument("--dir", metavar="DIR", help="write ikev2_decryption_table and esp_sa files (0600) into DIR "
                                                "instead of printing")
    _add_target(e)
    e.set_defaults(func=_export)


def socket_path(args: argparse.Namespace) -> str | None:
    if getattr(args, "socket", None):
        return args.socket
    if getattr(args, "config", None):
        try:
            return load_config(args.config).gateway.control_socket
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return None
    return os.environ.get(ENV_SOCKET) or GatewayConfig().control_socket


def _call(args: argparse.Namespace, cmd: str, **kw: Any) -> tuple[int, Any]:
    path = socket_path(args)
    if path is None:
        return 2, None
    try:
        return 0, call(path, cmd, **kw)
    except ControlError as exc:
        print(f"ipsecgw {cmd}: {exc}", file=sys.stderr)
        return 1, None


def _list_sas(args: argparse.Namespace) -> int:
    rc, sas = _call(args, "list-sas")
    if rc:
        return rc
    print(json.dumps(sas, indent=2) if args.json else format_sas(sas), end="" if not args.json else "\n")
    return 0


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(max(s, 0))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_sas(sas: list[dict[str, Any]]) -> str:
    """swanctl --list-sas style text."""
    if not sas:
        return "no IKE SAs\n"
    lines = []
    for ike in sas:
        if ike.get("name") is None:
            lines.append("replaced CHILD SAs (inbound kept for packets in flight):")
        else:
            role = "initiator" if ike["initiator"] else "responder"
            lines.append(f"{ike['name']}: #{ike['unique']}, {ike['state']}, IKEv2, {ike['spi_i']}_i "
                         f"{ike['spi_r']}_r, {role}")
            loc, rem = ike["local"], ike["remote"]
            lines.append(f"  local  '{loc['id']}' @ {loc['addr']}[{loc['port']}]")
            lines.append(f"  remote '{rem['id']}' @ {rem['addr']}[{rem['port']}]")
            if ike["proposal"]:
                nat = ike.get("nat") or {}
                natt = " NAT-T" + (" (local behind NAT)" if nat.get("local") else "") + \
                    (" (remote behind NAT)" if nat.get("remote") else "") if nat.get("local") or nat.get("remote") \
                    else ""
                lines.append(f"  {ike['proposal']}{natt}")
                lines.append(f"  established {_dur(ike['established'])} ago, rekeying in {_dur(ike['rekey_in'])}")
        for c in ike["children"]:
            enc = ", UDP-encapsulated" if c["encap"] else ""
            lines.append(f"  {c['name']}: {c['state']}, {c['mode'].upper()}{enc}, {c['proposal']}")
            slot_out = f"slot {c['slot_out']}" if c["slot_out"] is not None else "gone"
            out = f"0x{c['spi_out']} ({slot_out})"
            lines.append(f"    in  0x{c['spi_in']} (slot {c['slot_in']}), out {out}")
            lines.append(f"    installed {_dur(c['installed'])} ago, rekeying in {_dur(c['rekey_in'])}, "
                         f"expires in {_dur(c['expire_in'])}"
                         + (f", removed in {_dur(c['remove_in'])}" if c.get("remove_in") is not None else ""))
            lines.append(f"    local  {', '.join(c['local_ts'])}")
            lines.append(f"    remote {', '.join(c['remote_ts'])}")
    return "\n".join(lines) + "\n"


def _verb(args: argparse.Namespace) -> int:
    rc, result = _call(args, args.verb, name=args.name)
    if rc:
        return rc
    print(json.dumps(result) if args.json else result)
    return 0


def _export(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("ipsecgw export-keys: root only", file=sys.stderr)
        return 1
    rc, tables = _call(args, "export-keys", format=args.format)
    if rc:
        return rc
    if args.dir:
        d = Path(args.dir)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, text in tables.items():
            fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        print(f"wrote {d / 'ikev2_decryption_table'} and {d / 'esp_sa'}")
        return 0
    for name, text in tables.items():
        sys.stdout.write(f"# {name}\n{text}")
    return 0
