"""The ``ipsecgw`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds its parser and sets ``func`` (``args -> exit code``).  Adding a
command (run, status, list-sas, bench...) means writing such a module and
listing it in ``COMMAND_MODULES``.

Exit codes: 0 success, 1 some packets failed or input was damaged,
2 usage, configuration or unreadable-input errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = ("control.pcap_cmd", "control.bench_cmd", "control.run_cmd", "control.sas_cmd",
                                   "control.fastpath_cmd")


def _register_caps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caps", help="show ESP engines, algorithms, CPU crypto features and DPDK devices",
                       description="Show which ESP engines can run here (and why not), the algorithms "
                                   "each serves, the CPU features that matter for crypto speed, and the "
                                   "DPDK devices (in a child process) with what they offload.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--dpdk-vdev", action="append", metavar="VDEV",
                   help="DPDK virtual device to probe, e.g. crypto_aesni_gcm0 (repeatable; default: the "
                        "software crypto PMDs)")
    p.add_argument("--dpdk-pci", action="append", default=[], metavar="ADDR",
                   help="PCI device to probe with DPDK (repeatable; default: no PCI scan)")
    p.add_argument("--no-dpdk", action="store_true", help="do not start DPDK to discover devices")
    p.set_defaults(func=_run_caps)


def _run_caps(args: argparse.Namespace) -> int:
    from fastpath.caps import collect, format_table

    vdevs = args.dpdk_vdev
    if vdevs is None and args.dpdk_pci:
        vdevs = []   # PCI devices named: probe those, not the default vdevs
    caps = collect(dpdk=not args.no_dpdk, dpdk_vdevs=vdevs, dpdk_pci=args.dpdk_pci)
    print(json.dumps(caps, indent=2) if args.json else format_table(caps))
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only the module of ``command`` when it has one named after it
    (``fastpath`` -> control/fastpath_cmd.py): a restarted fastpath or control process then skips importing
    every other command's dependencies, which under load is most of its start-up time."""
    parser = argparse.ArgumentParser(prog="ipsecgw", description="IPsec gateway with a batched ESP data plane.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    own = f"control.{(command or '').replace('-', '_')}_cmd"
    for name in (own,) if own in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    if own not in COMMAND_MODULES:
        _register_caps(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_in[0] if args_in and not args_in[0].startswith("-") else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into e.g. head: not an error worth a traceback.
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
