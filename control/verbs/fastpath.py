"""``ipsecgw fastpath -c CONFIG``: run the fastpath process (kernel or DPDK I/O) beside a running control process.

The fastpath is handed a ``FastpathPlan`` (control/fastpath_plan.py), never the configuration itself."""

from __future__ import annotations

import argparse

from control.config import load_config_or_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fastpath", help="run the fastpath process (packet I/O and ESP) from a YAML configuration",
                       description="Run the fastpath: attach to the shared-memory region control creates (waiting "
                                   "for it), open the TUN device and the protected-side sockets named by the "
                                   "gateway section, and forward until SIGTERM/SIGINT. A restarted fastpath "
                                   "re-attaches and resumes the installed SAs. See docs/fastpath.md.")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG.yaml")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override gateway.log_level")
    p.add_argument("--log-format", choices=("text", "json"), help="override gateway.log_format")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for control to create the region (default 30)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from control.fastpath_plan import fastpath_plan
    from fastpath.daemon import Fastpath, serve_until_signal
    from fastpath.io.kio import KioError
    from fastpath.io.tun import TunError
    from fastpath.logs import setup_logging
    from fastpath.shm import RegionError

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 2
    setup_logging(args.log_level or cfg.gateway.log_level, fmt=args.log_format or cfg.gateway.log_format)
    plan = fastpath_plan(cfg)
    if plan.settings.io == "dpdk":       # the DPDK fastpath instead (fastpath/dpdk/daemon.py)
        from fastpath.dpdk.daemon import serve

        return serve(plan, args.wait)
    return serve_until_signal(lambda: Fastpath(plan, region_timeout=args.wait),
                              (RegionError, TunError, KioError, OSError))
