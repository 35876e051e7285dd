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
    d.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from control import bench_dpdk_control
    from fastpath.dpdk import DpdkUnavailable, EalError
    from fastpath.dpdk.bench import run
    from fastpath.dpdk.gw_bench import run_gateway
    from fastpath.engines.base import EngineError

    try:
        if not 42 <= args.size <= 2000:
            raise ValueError(f"--size: expected 42..2000 bytes, got {args.size}")
        if args.seconds <= 0:
            raise ValueError("--seconds must be positive")
        if args.mode == "gateway":
            res = run_gateway(args.size, args.direction, engine=args.crypto, seconds=args.seconds, burst=args.burst,
                              lcore=args.lcore, control=[sys.executable, "-m", bench_dpdk_control.__name__])
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
