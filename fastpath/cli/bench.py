"""``ipsecgw bench esp`` (one ESP throughput cell, like ``openssl speed``) and ``ipsecgw bench dpdk`` (the
DPDK fastpath on one worker core, in the set-up ipsec-secgw is measured with).

What they run is in fastpath/bench/.  The gateway mode of ``bench dpdk`` needs a control process holding the
region; this layer cannot import control, so the dispatcher (control/cli.py) passes its command line in.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fastpath.bench.esp import BENCH_ALGS, NAIVE, compare_directions, measure, parse_alg


def register(sub: argparse._SubParsersAction, dpdk_control: Sequence[str]) -> None:
    """Add ``bench`` with its verbs; ``dpdk_control`` is the argv of bench dpdk's control process."""
    p = sub.add_parser("bench", help="measure data-plane throughput on this machine",
                       description="Measure data-plane throughput on this machine.")
    bsub = p.add_subparsers(dest="bench_what", metavar="WHAT", required=True)
    _add_esp(bsub)
    _add_dpdk(bsub, list(dpdk_control))


def _add_esp(bsub: argparse._SubParsersAction) -> None:
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


def _add_dpdk(bsub: argparse._SubParsersAction, dpdk_control: list[str]) -> None:
    from fastpath.bench.dpdk import ENGINES

    d = bsub.add_parser(
        "dpdk", help="DPDK fastpath throughput on virtual devices (one worker core)",
        description="Replay pre-built frames (net_pcap, infinite_rx=1) into net_null through the DPDK fastpath "
                    "on one core and report the forwarding rate. Mode gateway (default): the gateway worker of "
                    "`ipsecgw run` (io: dpdk) with a control process attached, which created the shared-memory "
                    "region (SPD and one AES-128-GCM tunnel CHILD SA) and changes another SA every 100 ms; "
                    "per-packet SPD lookup outbound. Mode loop: the one-direction loop, one SA, no SPD. "
                    "SIZE is the plaintext frame length without FCS (inbound input is its ESP); Gbit/s counts "
                    "plaintext frame bits. EAL runs without hugepages or PCI.")
    d.add_argument("--mode", choices=("gateway", "loop"), default="gateway",
                   help="gateway: the gateway worker with control live (default); loop: the one-direction loop")
    d.add_argument("--size", type=int, default=1400, help="plaintext frame bytes, 42..2000 (default 1400)")
    d.add_argument("--direction", choices=("out", "in"), default="out")
    d.add_argument("--crypto", default="crypto_aesni_gcm0", metavar="ENGINE",
                   help=f"crypto engine: {'; '.join(f'{k}: {v}' for k, v in ENGINES.items())}; any other "
                        "cryptodev vdev name runs a lookaside session on it")
    d.add_argument("--seconds", type=float, default=5.0, help="measuring time after a 1 s warm-up (default 5)")
    d.add_argument("--burst", type=int, default=32, help="rx burst size (default 32)")
    d.add_argument("--lcore", type=int, default=0, help="gateway mode: the core the worker runs on (EAL -l; "
                   "default 0)")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.set_defaults(func=_run_dpdk, dpdk_control=dpdk_control)


def _run_dpdk(args: argparse.Namespace) -> int:
    from fastpath.bench.dpdk import run
    from fastpath.bench.dpdk_gateway import run_gateway
    from fastpath.dpdk import DpdkUnavailable, EalError
    from fastpath.engines.base import EngineError

    try:
        if not 42 <= args.size <= 2000:
            raise ValueError(f"--size: expected 42..2000 bytes, got {args.size}")
        if args.seconds <= 0:
            raise ValueError("--seconds must be positive")
        if args.mode == "gateway":
            res = run_gateway(args.size, args.direction, engine=args.crypto, seconds=args.seconds, burst=args.burst,
                              lcore=args.lcore, control=args.dpdk_control)
        else:
            res = run(args.size, args.direction, engine=args.crypto, seconds=args.seconds, burst=args.burst)
    except (ValueError, DpdkUnavailable, EalError, EngineError, RuntimeError) as exc:
        print(f"ipsecgw bench dpdk: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        where = f"gateway worker, SA on {res.placement}, control made {res.control_sa_changes} SA changes" \
            if res.mode == "gateway" else "loop"
        print(f"dpdk {res.engine} ({where}) aes-gcm-128 {res.size} B {res.direction}: {res.mpps:.3f} Mpps, "
              f"{res.gbps:.2f} Gbit/s ({res.packets} packets in {res.seconds:.2f} s, burst {res.burst}"
              f"{', drops ' + str(res.drops) if res.drops else ''})")
    return 0
