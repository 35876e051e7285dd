"""``ipsecgw bench esp``: measure one ESP throughput cell, like ``openssl speed``."""

from __future__ import annotations

import argparse
import json
import sys

from control import bench_dpdk_cmd
from fastpath.bench_esp import BENCH_ALGS, NAIVE, compare_directions, measure, parse_alg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure data-plane throughput on this machine",
                       description="Measure data-plane throughput on this machine.")
    bsub = p.add_subparsers(dest="bench_what", metavar="WHAT", required=True)
    e = bsub.add_parser("esp", help="ESP tunnel-mode IPv4 throughput of one engine",
                        description="Time one engine on one algorithm, packet size and direction "
                                    "(one core, tunnel mode, IPv4). 'naive' is the per-packet Python baseline.")
    e.add_argument("--alg", default="aes-gcm-128",
                   help=f"AEAD name or CIPHER-INTEGRITY, e.g. {', '.join(BENCH_ALGS)} (default aes-gcm-128)")
    e.add_argument("--size", default="1400", help="inner packet bytes (>= 28) or imix (default 1400)")
    e.add_argument("--direction", choices=("out", "in", "both"), default="out",
                   help="out, in, or both: inbound against outbound from short paired samples (default out)")
    e.add_argument("--pairs", type=int, default=300, help="with --direction both: paired samples (default 300)")
    e.add_argument("--engine", default="best", help=f"best, {NAIVE}, or an engine from `ipsecgw caps`")
    e.add_argument("--batch", type=int, default=256, help="packets per engine call (default 256)")
    e.add_argument("--seconds", type=float, default=3.0, help="measuring time (default 3)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_run_esp)
    bench_dpdk_cmd.add_verb(bsub)


def _run_esp(args: argparse.Namespace) -> int:
    from fastpath.engines import EngineError, create

    try:
        parse_alg(args.alg)
        if args.size != "imix" and (not args.size.isdigit() or not 28 <= int(args.size) <= 9000):
            raise ValueError(f"--size: expected imix or 28..9000 bytes, got {args.size!r}")
        if not 1 <= args.batch <= 4096:
            raise ValueError(f"--batch: expected 1..4096, got {args.batch}")
        engine = args.engine
        if engine == "best":
            eng = create("best", capacity=1)
            engine = eng.name
            eng.close()
        if args.direction == "both":
            if not 10 <= args.pairs <= 100_000:
                raise ValueError(f"--pairs: expected 10..100000, got {args.pairs}")
            result = compare_directions(engine, args.alg, args.size, args.batch, args.pairs)
        else:
            result = measure(engine, args.alg, args.size, args.direction, args.batch, args.seconds)
    except (ValueError, EngineError) as exc:
        print(f"ipsecgw bench esp: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict()) if args.json else result.text())
    return 0
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{result.engine} {result.alg} {result.size} B {result.direction}: "
              f"{result.mpps:.3f} Mpps, {result.gbps:.2f} Gbit/s "
              f"({result.packets} packets in {result.seconds:.2f} s, batch {result.batch})")
    return 0
