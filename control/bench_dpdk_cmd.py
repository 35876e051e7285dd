"""``ipsecgw bench dpdk``: the DPDK fastpath on one worker core, in the set-up ipsec-secgw is measured with.

control.bench_cmd owns the ``bench`` command and adds this verb with ``add_verb``.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_verb(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``dpdk`` to the subcommands of ``ipsecgw bench``."""
    from fastpath.dpdk.bench import ENGINES

    d = bench_sub.add_parser(
        "dpdk", help="DPDK fastpath throughput on virtual devices (one worker core)",
        description="Replay pre-built frames (net_pcap, infinite_rx=1) through the DPDK worker loop with a "
                    "single AES-128-GCM tunnel SA into net_null, on one core, and report the forwarding rate. "
                    "SIZE is the plaintext frame length without FCS (inbound input is its ESP); Gbit/s counts "
                    "plaintext frame bits. EAL runs without hugepages or PCI.")
    d.add_argument("--size", type=int, default=1400, help="plaintext frame bytes, 42..2000 (default 1400)")
    d.add_argument("--direction", choices=("out", "in"), default="out")
    d.add_argument("--crypto", default="cpu", metavar="VDEV",
                   help=f"crypto engine: {', '.join(f'{k} ({v})' for k, v in ENGINES.items())}; cryptodev "
                        "vdevs (crypto_aesni_gcm0, crypto_openssl0) are not wired into the loop yet")
    d.add_argument("--seconds", type=float, default=5.0, help="measuring time after a 1 s warm-up (default 5)")
    d.add_argument("--burst", type=int, default=32, help="rx burst size (default 32)")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastpath.dpdk import DpdkUnavailable, EalError
    from fastpath.dpdk.bench import run

    try:
        if not 42 <= args.size <= 2000:
            raise ValueError(f"--size: expected 42..2000 bytes, got {args.size}")
        if args.seconds <= 0:
            raise ValueError("--seconds must be positive")
        res = run(args.size, args.direction, engine=args.crypto, seconds=args.seconds, burst=args.burst)
    except (ValueError, DpdkUnavailable, EalError) as exc:
        print(f"ipsecgw bench dpdk: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        print(f"dpdk {res.engine} aes-gcm-128 {res.size} B {res.direction}: {res.mpps:.3f} Mpps, "
              f"{res.gbps:.2f} Gbit/s ({res.packets} packets in {res.seconds:.2f} s, burst {res.burst}"
              f"{', drops ' + str(res.drops) if res.drops else ''})")
    return 0
