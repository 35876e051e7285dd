"""``ipsecgw run -c CONFIG [--control-only]`` and ``ipsecgw check -c CONFIG``.

``run`` without ``--control-only`` is the whole gateway: a supervisor (control/supervisor.py) that starts
the control process (``run --supervised``, control/gateway.py) and the fastpath process
(``ipsecgw fastpath``) and restarts either when it dies.
"""

from __future__ import annotations

import argparse
import asyncio

from control.config import load_config_or_report
from control.pools import pools_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway from a YAML configuration",
                       description="Run the gateway: the control process (IKEv2, SAs and policies into shared "
                                   "memory) and the fastpath process (TUN, ESP sockets, the ESP engine), "
                                   "supervised: either is restarted if it dies. SIGTERM or Ctrl-C stops control "
                                   "first (Deletes sent, keys zeroed), then the fastpath, then removes the TUN. "
                                   "SIGHUP reloads the configuration. With --control-only only the control "
                                   "process runs, with no fastpath attached.")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG.yaml")
    p.add_argument("--control-only", action="store_true", help="run the IKE control process alone")
    p.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)   # the control worker of `run`
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override gateway.log_level")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="override gateway.log_format (json: one object a line)")
    p.add_argument("--log-file", metavar="PATH", help="append the log here instead of stderr (default: "
                                                      "gateway.log_file)")
    p.set_defaults(func=_run)
    c = sub.add_parser("check", help="validate a configuration without starting anything",
                       description="Check a configuration file; every problem is listed with the file, line, "
                                   "the path to the field and what was expected.")
    c.add_argument("-c", "--config", required=True, metavar="CONFIG.yaml")
    c.add_argument("--json", action="store_true", help="print one JSON object: file, ok, connections, errors")
    c.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    if args.json:
        from control.verbs.check_json import check_json

        return check_json(args.config)
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    kids = sum(len(c.children) for c in cfg.connections.values())
    print(f"{args.config}: OK ({len(cfg.connections)} connection(s), {kids} child(ren))")
    for conn in cfg.connections.values():
        for child in conn.children:
            props = child.ah_proposals or child.esp_proposals
            print(f"  {conn.name}/{child.name}: {child.protocol.upper()} {child.mode}, {', '.join(props)}")
    for pool in pools_of(cfg):
        dns = f", dns {', '.join(map(str, pool.dns))}" if pool.dns else ""
        print(f"  pool {pool.name}: {pool.addrs} ({pool.size} address(es){dns})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from fastpath.logs import setup_logging

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    if args.control_only or args.supervised:
        from control.gateway import run_gateway

        stream = None
        if args.control_only and (args.log_file or cfg.gateway.log_file):
            stream = open(args.log_file or cfg.gateway.log_file, "a", buffering=1)  # noqa: SIM115 - process lifetime
        setup_logging(args.log_level or cfg.gateway.log_level, stream, args.log_format or cfg.gateway.log_format)
        return asyncio.run(run_gateway(cfg, args.config, supervised=args.supervised))
    from control.supervisor import run_supervisor

    return run_supervisor(args.config, cfg, args.log_level, args.log_file, args.log_format)
