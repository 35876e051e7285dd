"""Operator verbs on a running daemon: status, list-sas, list-policies, reload, initiate, terminate, rekey,
export-keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.config import GatewayConfig, load_config_or_report
from control.ctl import ControlError, call
from control.ike_counts import status_lines as ike_status_lines
from control.pools import pools_text

ENV_SOCKET = "IPSECGW_SOCKET"


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-c", "--config", metavar="CONFIG.yaml", help="find the control socket in this configuration")
    g.add_argument("--socket", metavar="PATH", help=f"the control socket (default: ${ENV_SOCKET} or "
                                                     f"{GatewayConfig().control_socket})")


def _add_query(sub: argparse._SubParsersAction, name: str, help_: str, description: str, func: Any) -> None:
    """A read-style verb: the target options and --json."""
    p = sub.add_parser(name, help=help_, description=description)
    _add_target(p)
    p.add_argument("--json", action="store_true", help="print the daemon's JSON")
    p.set_defaults(func=func)


def register(sub: argparse._SubParsersAction) -> None:
    queries = [
        ("list-sas", "IKE SAs and CHILD SAs of the running daemon",
         "Show IKE SAs (peer, identities, proposal, SPIs, state, rekey time) and their CHILD SAs (proposal, "
         "SPIs, shared-memory slots, traffic selectors, times).", _list_sas),
        ("status", "processes, engines, I/O and traffic totals of the running gateway",
         "Show the gateway's processes (pids, uptime, restarts), the I/O mode, the ESP engines, SA and policy "
         "counts, and packet/byte totals with drops by reason.", _status),
        ("list-policies", "the SPD entries of the running gateway",
         "Show the security policies control installed in the fastpath's SPD: selectors, action, priority "
         "(lower wins) and the SA each is bound to (or trap: the first matching packet raises an ACQUIRE).",
         _list_policies),
        ("list-pools", "the virtual IP pools of the running gateway and their leases",
         "Show each address pool (pools: in the configuration): its range, size, how many addresses are "
         "leased to an IKE SA now (used), and every lease: address, identity, online (an offline lease is "
         "offered to the same identity again when it comes back).", _list_pools),
        ("reload", "apply a changed configuration file without dropping unaffected SAs",
         "Make the daemon re-read the configuration file it was started with: new connections are added, "
         "removed ones terminated (Deletes sent), changed ones terminated and added again; unchanged "
         "connections keep their SAs. Changes to the gateway section (except log_level, export_keys) need a "
         "restart.", _reload),
    ]
    # list-sas first, then the verbs that act on a name, then the rest: the order `ipsecgw --help` lists them
    _add_query(sub, *queries[0])
    for verb, text in (("initiate", "negotiate a connection or one of its children"),
                       ("terminate", "delete a connection's IKE SA(s) or a child's CHILD SA(s)"),
                       ("rekey", "rekey a connection's IKE SA(s) or a child's CHILD SA(s)")):
        v = sub.add_parser(verb, help=text, description=f"{text[0].upper()}{text[1:]}. NAME is a connection or a "
                                                          "child name from the configuration.")
        v.add_argument("name", metavar="NAME")
        _add_target(v)
        v.add_argument("--json", action="store_true", help="print {command, name, ok, result} (or error)")
        v.set_defaults(func=_verb, verb=verb)
        if verb == "initiate":
            v.description += (" Waits until the IKE SA and its CHILD SA(s) are up (exit 0) or the negotiation "
                              "failed or timed out (exit 1: the reason on the first line, what we offered "
                              "and why it did not match after it).")
            v.add_argument("--timeout", type=float, default=30.0, metavar="S",
                           help="wait at most S seconds for the outcome (default 30)")
            v.add_argument("--no-wait", action="store_true", help="only start the negotiation")
            v.set_defaults(func=_initiate)
    for q in queries[1:]:
        _add_query(sub, *q)
    e = sub.add_parser("export-keys", help="print SA keys for Wireshark (root only, off unless enabled)",
                       description="Print the IKE and ESP keys of the live SAs in Wireshark's "
                                   "ikev2_decryption_table and esp_sa formats (as strongSwan's save-keys), and "
                                   "AH SAs' keys in ah_sa (esp_sa's columns, authentication only). Needs "
                                   "root and gateway.export_keys: yes. Anyone holding the output can decrypt the "
                                   "traffic.")
    e.add_argument("--format", choices=("wireshark",), default="wireshark")
    e.add_argument("--dir", metavar="DIR", help="write the ikev2_decryption_table, esp_sa and ah_sa files (0600) "
                                                "into DIR instead of printing")
    e.add_argument("--json", action="store_true", help="print one JSON object: file name -> table text "
                                                         "(with --dir: the files written)")
    _add_target(e)
    e.set_defaults(func=_export)


def socket_path(args: argparse.Namespace) -> str | None:
    if getattr(args, "socket", None):
        return args.socket
    if getattr(args, "config", None):
        cfg = load_config_or_report(args.config)
        return cfg.gateway.control_socket if cfg is not None else None
    return os.environ.get(ENV_SOCKET) or GatewayConfig().control_socket


def _call(args: argparse.Namespace, cmd: str, **kw: Any) -> tuple[int, Any]:
    path = socket_path(args)
    if path is None:
        return 2, None
    try:
        return 0, call(path, cmd, **kw)
    except ControlError as exc:
        if getattr(args, "json", False):
            # a script reading stdout learns why too; the exit code is the same as without --json
            print(json.dumps({"command": cmd, "ok": False, "error": str(exc)}))
        print(f"ipsecgw {cmd}: {exc}", file=sys.stderr)
        return 1, None


def _show(args: argparse.Namespace, cmd: str, text: Callable[[Any], str]) -> int:
    """A read-style verb: the daemon's answer to cmd as JSON (--json) or as text(answer)."""
    rc, answer = _call(args, cmd)
    if rc:
        return rc
    print(json.dumps(answer, indent=2) if args.json else text(answer), end="" if not args.json else "\n")
    return 0


def _list_sas(args: argparse.Namespace) -> int:
    return _show(args, "list-sas", format_sas)


def _list_pools(args: argparse.Namespace) -> int:
    return _show(args, "list-pools", lambda pools: pools_text(pools) + "\n")


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
        if ike.get("state") == "ADOPTED":
            lines.append("adopted from a previous control process (forwarding until renegotiated):")
            for a in ike.get("adopted", []):
                lines.append(f"  slot {a['slot']}: {a['direction']} 0x{a['spi']}, {a['proposal']}, "
                             f"{a['placement']}: {_ctr_text(a.get('counters'))}")
            continue
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
            if ike.get("vips"):
                lines.append(f"  virtual IP(s) {', '.join(ike['vips'])}")
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
            if c.get("placement"):
                lines.append(f"    engine {c['engine']} (placement {c['placement']})")
                if c.get("placement_out") and c["placement_out"] != c["placement"]:
                    lines.append(f"    outbound placement {c['placement_out']}")
                for why in c.get("placement_skipped") or ():     # io dpdk: rungs the SA could not use
                    lines.append(f"      not on {why}")
            ctr = c.get("counters")
            if ctr:
                lines.append(f"    in   {_ctr_text(ctr['in'])}")
                lines.append(f"    out  {_ctr_text(ctr['out'])}")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _ctr_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    drops = ", ".join(f"{k} {v}" for k, v in sorted(c["drops"].items()))
    return f"{c['packets']} packets, {_size(c['bytes'])}" + (f" (dropped: {drops})" if drops else "")


def _status(args: argparse.Namespace) -> int:
    return _show(args, "status", format_status)


def format_status(st: dict[str, Any]) -> str:
    lines = [f"ipsecgw {st.get('mode', 'gateway')}" + (f", config {st['config']}" if st.get("config") else "")]
    procs = st.get("processes") or {}
    if procs:
        lines.append("processes:")
        for name in ("supervisor", "control", "fastpath"):
            p = procs.get(name)
            if p is None:
                continue
            state = "running" if p.get("running") or p.get("alive") else "NOT RUNNING"
            extra = ""
            if name != "supervisor":
                extra = f", restarts {p.get('restarts', 0)}"
                if p.get("last_exit"):
                    extra += f" (last: {p['last_exit']})"
            if name == "fastpath" and p.get("heartbeat_age") is not None:
                extra += f", heartbeat {p['heartbeat_age']:.1f}s ago"
            pid = p.get("pid") or "-"
            lines.append(f"  {name:<10} {state:<11} pid {pid:<8} up {_dur(p.get('uptime'))}{extra}")
    io, eng = st.get("io"), st.get("engines")
    if io:
        clear = f"AF_PACKET {io['clear_interface']}" if io.get("clear") == "af_packet" else f"TUN {io['tun']}"
        lines.append(f"I/O: {io['mode']} ({clear}, outer MTU {io['outer_mtu']}), IKE on UDP "
                     f"{io['ike_port']}/{io['natt_port']}")
    if io and io.get("mode") == "dpdk":
        dp = io.get("dpdk") or {}
        lines.append(f"DPDK worker: clear {io.get('clear_port')} ({io.get('clear_interface')}), protected "
                     f"{io.get('protected_port')} ({io.get('protected_interface')}): rx {dp.get('rx_clear', '-')}/"
                     f"{dp.get('rx_prot', '-')}, tx {dp.get('tx_clear', '-')}/{dp.get('tx_prot', '-')} packets "
                     f"(clear/protected), ESP out {dp.get('protect', 0)}, in {dp.get('decrypted', 0)}, "
                     f"ACQUIREs {dp.get('acquires', 0)}, no neighbour {dp.get('no_neigh', 0)}")
    if io and io.get("clear") == "af_packet":
        ap = io.get("af_packet") or {}
        lines.append(f"clear side: AF_PACKET on {io['clear_interface']}: rx {ap.get('rx_packets', '-')} packets, "
                     f"tx {ap.get('tx_packets', '-')} packets, no neighbour {ap.get('no_neighbour', '-')} "
                     f"(dropped {ap.get('no_neighbour_dropped', '-')}), too big {ap.get('too_big', '-')}, "
                     f"send failed {ap.get('tx_failed', '-')}")
    if eng:
        lines.append(f"ESP engine: {eng['used']} (configured: {eng['configured']}; present: "
                     f"{', '.join(eng['present']) or 'none'})")
    lines.append(f"SAs: {st['ike_sas']} IKE, {st['child_sas']} CHILD"
                 + (f", {st['adopted_sas']} adopted from a previous control" if st.get("adopted_sas") else "")
                 + f"; {st['policies']} policies; connections: {', '.join(st.get('connections', [])) or '-'}")
    lines.extend(_admission_text(st.get("admission"), st.get("counters") or {}))
    lines.extend(ike_status_lines(st.get("ike")))
    lines.extend(_fastpath_totals_text(st.get("fastpath_totals")))
    tot = st.get("totals")
    if tot:
        lines.append(f"traffic in:  {_ctr_text(tot['in'])}")
        lines.append(f"traffic out: {_ctr_text(tot['out'])}")
    return "\n".join(lines) + "\n"


def _admission_text(a: dict[str, Any] | None, counters: dict[str, int]) -> list[str]:
    """The responder gate (control/responder_gate.py): half-open now against its limits, drops by reason."""
    if not a:
        return []
    line = (f"IKE_SA_INIT gate: {a['half_open']} half-open (limit {a['max_half_open']}, {a['per_source']} per "
            f"source, busiest source {a['busiest_source']}, cookies from {a['cookie_threshold']}, timeout "
            f"{a['half_open_timeout']:.0f}s)")
    drops = dict(a.get("counters") or {})
    if counters.get("no_connection"):
        drops["no_connection"] = counters["no_connection"]
    tail = ", ".join(f"{k} {v}" for k, v in sorted(drops.items()))
    return [line, f"  counted: {tail}"] if tail else [line]


# outbound verdicts in the order an operator reads them, with their names in the text output
_OUT_VERDICTS = (("protect", "protected"), ("bypass", "bypass"), ("discard", "discard"),
                 ("acquire", "held for ACQUIRE"), ("icmp-too-big", "too big (ICMP sent)"),
                 ("fragmented", "fragmented"), ("too-big", "too big (dropped)"), ("no-policy", "no policy"),
                 ("malformed", "malformed"), ("engine-drop", "engine drop"))


def _fastpath_totals_text(ft: dict[str, Any] | None) -> list[str]:
    """The fastpath's gateway-wide counters (fastpath/totals.py): verdicts out, ESP statuses in, bytes."""
    if not ft:
        return ["gateway totals: none yet (no fastpath has written any)"]
    age = f", updated {ft['age']:.1f}s ago" if ft.get("age") is not None else ""
    out, inb = ft.get("outbound", {}), ft.get("inbound", {})
    verdicts = [f"{text} {out.get(k, 0)}" for k, text in _OUT_VERDICTS]
    verdicts.insert(4, f"held and dropped {ft.get('held_dropped', 0)}")
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(inb.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    return [
        f"gateway totals{age}:",
        f"  outbound: {ft.get('tun_in', 0)} packets, {_size(ft.get('tun_in_bytes', 0))} from the clear side",
        "    " + ", ".join(verdicts),
        f"    {ft.get('fragments', 0)} fragments made; sent {ft.get('sent', 0)} packets "
        f"({_size(ft.get('esp_out_bytes', 0))} of ESP), send failures {ft.get('send_failed', 0)}",
        f"  inbound: {ft.get('esp_in', 0)} packets, {_size(ft.get('esp_in_bytes', 0))} from the protected side",
        f"    {statuses or 'none'}",
        f"    written to the clear side: {ft.get('tun_out', 0)} packets (ICMP errors included), "
        f"{_size(ft.get('tun_out_bytes', 0))} decrypted",
    ]


def _list_policies(args: argparse.Namespace) -> int:
    return _show(args, "list-policies", format_policies)


def _sel_text(net: str, proto: int, ports: list[int]) -> str:
    if not proto and tuple(ports) == (0, 65535):
        return net
    p = "" if tuple(ports) == (0, 65535) else f"/{ports[0]}" if ports[0] == ports[1] else f"/{ports[0]}-{ports[1]}"
    return f"{net}[{proto}{p}]"


def format_policies(pols: list[dict[str, Any]]) -> str:
    if not pols:
        return "no policies\n"
    lines = []
    for p in pols:
        owner = f"{p['connection']}/{p['child']}" if p.get("connection") else "-"
        lines.append(f"{p['index']:>4}  {owner:<16} out {_sel_text(p['src'], p['proto'], p['sport'])} -> "
                     f"{_sel_text(p['dst'], p['proto'], p['dport'])}  {p['action'].upper()} prio {p['priority']}  "
                     f"{p['state']}" + (f" (slot {p['sa_slots'][0]})" if p.get("sa_slots") else ""))
    return "\n".join(lines) + "\n"


def _reload(args: argparse.Namespace) -> int:
    rc, res = _call(args, "reload")
    if rc:
        return rc
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"reloaded: {res['summary']}")
    for what in ("added", "removed", "changed", "unchanged"):
        if res[what]:
            print(f"  {what}: {', '.join(res[what])}")
    return 0


def _verb(args: argparse.Namespace) -> int:
    rc, result = _call(args, args.verb, name=args.name)
    if rc:
        return rc
    if args.json:
        print(json.dumps({"command": args.verb, "name": args.name, "ok": True, "result": result}))
    else:
        print(result)
    return 0


def _initiate(args: argparse.Namespace) -> int:
    if args.no_wait:
        return _verb(args)
    if not 0 < args.timeout <= 600:
        print("ipsecgw initiate: --timeout: expected seconds, more than 0 and at most 600", file=sys.stderr)
        return 2
    # the daemon answers when the negotiation has ended or its own wait ran out: give it that long
    rc, out = _call(args, "initiate", timeout=args.timeout + 10, name=args.name, wait=args.timeout)
    if rc:
        return rc
    if not isinstance(out, dict):       # a daemon that predates waiting answers with its text
        print(json.dumps({"command": "initiate", "name": args.name, "ok": True, "result": out}) if args.json
              else out)
        return 0
    print(json.dumps(out, indent=2) if args.json else format_outcome(args.name, out), end="\n" if args.json else "")
    return 0 if out.get("ok") else 1


def format_outcome(name: str, o: dict[str, Any]) -> str:
    """``initiate``'s answer: one line saying up or why not, then the details."""
    if o.get("ok"):
        lines = [f"{name}: up, IKE SA {o['ike_sa']} with {o['peer']}"]
        lines += [f"  CHILD SA {c['name']}: in 0x{c['spi_in']}, out 0x{c['spi_out']}" for c in o.get("child_sas", [])]
        return "\n".join(lines) + "\n"
    who = f"from {o['peer']}" if o.get("received") else f"with {o['peer']}"
    lines = [f"{name}: failed: {o['failure']} {who} ({o['reason']})"]
    detail = o.get("detail") or []
    lines += [f"  {line}" for line in detail]
    if detail and o.get("offered"):
        lines.append("  what we offered:")
    lines += [f"{'    ' if detail else '  '}{line}" for line in o.get("offered") or ()]
    return "\n".join(lines) + "\n"


def _export(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        if args.json:
            print(json.dumps({"command": "export-keys", "ok": False, "error": "root only"}))
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
        written = [str(d / name) for name in tables]
        print(json.dumps({"wrote": written}) if args.json else "wrote " + ", ".join(written))
        return 0
    if args.json:
        print(json.dumps(tables, indent=2))
        return 0
    for name, text in tables.items():
        sys.stdout.write(f"# {name}\n{text}")
    return 0
