"""``ipsecgw systemd-unit``: print the systemd unit shipped in the package (control/systemd/ipsecgw.service)
with the paths of this installation filled in, ready for /etc/systemd/system/ipsecgw.service."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources

__all__ = ["register", "unit_text", "SHIPPED_EXE", "SHIPPED_CONFIG"]

# the paths the shipped unit names; replaced by this installation's
SHIPPED_EXE = "/usr/local/bin/ipsecgw"
SHIPPED_CONFIG = "/etc/ipsecgw/gateway.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("systemd-unit", help="print a systemd unit (Type=notify) that runs this gateway",
                       description="Print the systemd unit shipped with ipsecgw, with ExecStart/ExecReload naming "
                                   "this installation's ipsecgw and CONFIG. Install it with: ipsecgw systemd-unit "
                                   "> /etc/systemd/system/ipsecgw.service && systemctl daemon-reload. See "
                                   "docs/systemd.md.")
    p.add_argument("-c", "--config", default=SHIPPED_CONFIG, metavar="CONFIG.yaml",
                   help=f"the configuration the unit runs (default {SHIPPED_CONFIG})")
    p.add_argument("--exe", metavar="PATH", help="the ipsecgw executable (default: the one running this command)")
    p.set_defaults(func=_print)


def unit_text(exe: str = SHIPPED_EXE, config: str = SHIPPED_CONFIG) -> str:
    text = (resources.files("control") / "systemd" / "ipsecgw.service").read_text()
    return text.replace(SHIPPED_EXE, exe).replace(SHIPPED_CONFIG, config)


def _this_exe() -> str:
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "ipsecgw" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    return shutil.which("ipsecgw") or SHIPPED_EXE


def _print(args: argparse.Namespace) -> int:
    # systemd wants absolute paths; a relative CONFIG would be resolved against / by the service
    print(unit_text(os.path.abspath(args.exe) if args.exe else _this_exe(), os.path.abspath(args.config)), end="")
    return 0
