"""``ipsecgw caps``: which ESP engines, algorithms, CPU crypto features and DPDK devices this machine has."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastpath.caps import collect, format_table

    vdevs = args.dpdk_vdev
    if vdevs is None and args.dpdk_pci:
        vdevs = []   # PCI devices named: probe those, not the default vdevs
    caps = collect(dpdk=not args.no_dpdk, dpdk_vdevs=vdevs, dpdk_pci=args.dpdk_pci)
    print(json.dumps(caps, indent=2) if args.json else format_table(caps))
    return 0
