"""``ipsecgw run -c CONFIG --control-only`` and ``ipsecgw check -c CONFIG``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from control.config import ConfigError, load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gateway from a YAML configuration",
                       description="Run the gateway. With --control-only only the control process runs: IKE "
                                   "negotiates and SAs/policies go into the shared-memory region with no fastpath "
                                   "attached. Stops cleanly (SAs deleted, keys zeroed) on SIGTERM or Ctrl-C.")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG.yaml")
    p.add_argument("--control-only", action="store_true", help="run the IKE control process alone")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override gateway.log_level")
    p.set_defaults(func=_run)
    c = sub.add_parser("check", help="validate a configuration without starting anything",
                       description="Check a configuration file; every problem is listed with the file, line, "
                                   "the path to the field and what was expected.")
    c.add_argument("-c", "--config", required=True, metavar="CONFIG.yaml")
    c.set_defaults(func=_check)


def _load(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 2
    kids = sum(len(c.children) for c in cfg.connections.values())
    print(f"{args.config}: OK ({len(cfg.connections)} connection(s), {kids} child(ren))")
    return 0


def _run(args: argparse.Namespace) -> int:
    from control.daemon import run_daemon, setup_logging

    cfg = _load(args.config)
    if cfg is None:
        return 2
    if not args.control_only:
        print("ipsecgw run: the fastpath process is not part of this build yet; use --control-only to run the "
              "control process alone", file=sys.stderr)
        return 2
    setup_logging(args.log_level or cfg.gateway.log_level)
    return asyncio.run(run_daemon(cfg, control_only=True))
