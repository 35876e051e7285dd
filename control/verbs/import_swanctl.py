"""``ipsecgw import-swanctl swanctl.conf > gw.yaml``: a strongSwan configuration converted, with the list
of what did not convert (stderr and comments on top of the YAML), the result checked as ``ipsecgw check``
would."""

from __future__ import annotations

import argparse
import json
import os
import sys

from control.config import ConfigError, parse_config
from control.swanctl.convert import convert
from control.swanctl.emit import to_yaml
from control.swanctl.parse import SwanctlSyntaxError, load_swanctl


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-swanctl", help="convert a strongSwan swanctl.conf into an ipsecgw configuration",
                       description="Read a swanctl.conf (with its includes) and print the ipsecgw YAML for its "
                                   "connections, children and IKE secrets; what could not be converted is listed "
                                   "on stderr and as comments at the top, each with its swanctl path. Exit 0: "
                                   "converted and the result passes `ipsecgw check`; 1: nothing converted or the "
                                   "result does not pass; 2: the file is unreadable or not swanctl.conf syntax. "
                                   "See docs/migrating-from-strongswan.md.")
    p.add_argument("file", metavar="swanctl.conf")
    p.add_argument("--dir", metavar="DIR", help="where relative certificate and key names are found (x509/, "
                                                "x509ca/, private/ ... as swanctl's --dir; default: the "
                                                "directory of swanctl.conf)")
    p.add_argument("--json", action="store_true", help="print one JSON object: config, not_converted, problems")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        root = load_swanctl(args.file)
    except SwanctlSyntaxError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"ipsecgw import-swanctl: {exc}", file=sys.stderr)
        return 2
    conv = convert(root, args.dir or os.path.dirname(os.path.abspath(args.file)))
    text = to_yaml(conv, args.file)
    problems: list[str] = []
    if not conv.converted:
        problems.append("no connection converted")
    else:
        try:
            parse_config(text, "<converted>")
        except ConfigError as exc:
            problems = list(exc.problems)
    if args.json:
        print(json.dumps({"config": conv.config, "not_converted": [{"path": n.path, "reason": n.reason}
                                                                  for n in conv.notes],
                          "problems": problems}, indent=2))
    else:
        sys.stdout.write(text)
    for n in conv.notes:
        print(f"not converted: {n}", file=sys.stderr)
    for line in problems:
        print(f"ipsecgw import-swanctl: {line}", file=sys.stderr)
    return 1 if problems else 0
