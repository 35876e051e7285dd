"""The ``ipsecgw`` command line: this module only dispatches.

Each verb family lives with the layer it drives and exposes ``register(subparsers)``, which adds its parsers
and sets ``func`` (``args -> exit code``): pcap, bench and caps in fastpath/cli/, run/check, fastpath and the
verbs on a running gateway in control/verbs/.  A family is imported (a plain import inside its function here,
so the import checkers see the edge) only when the command line names one of its verbs, or for the full
help; adding a verb means adding it to ``VERBS``.

Exit codes: 0 success, 1 some packets failed or input was damaged,
2 usage, configuration or unreadable-input errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Registrar = Callable[[argparse._SubParsersAction], None]


def _pcap(sub: argparse._SubParsersAction) -> None:
    from fastpath.cli import pcap

    pcap.register(sub)


def _bench(sub: argparse._SubParsersAction) -> None:
    from control import bench_dpdk_control
    from fastpath.cli import bench

    # bench dpdk's gateway mode runs control's side of the benchmark, which the fastpath cannot import
    bench.register(sub, dpdk_control=[sys.executable, "-m", bench_dpdk_control.__name__])


def _run(sub: argparse._SubParsersAction) -> None:
    from control.verbs import run

    run.register(sub)


def _running(sub: argparse._SubParsersAction) -> None:
    from control.verbs import running

    running.register(sub)


def _import_swanctl(sub: argparse._SubParsersAction) -> None:
    from control.verbs import import_swanctl

    import_swanctl.register(sub)


def _fastpath(sub: argparse._SubParsersAction) -> None:
    from control.verbs import fastpath

    fastpath.register(sub)


def _systemd(sub: argparse._SubParsersAction) -> None:
    from control.verbs import systemd_unit

    systemd_unit.register(sub)


def _caps(sub: argparse._SubParsersAction) -> None:
    from fastpath.cli import caps

    caps.register(sub)


# verb -> the family that registers it, in the order `ipsecgw --help` lists the families
VERBS: dict[str, Registrar] = {
    "pcap": _pcap,
    "bench": _bench,
    "run": _run, "check": _run,
    "list-sas": _running, "initiate": _running, "terminate": _running, "rekey": _running, "status": _running,
    "list-policies": _running, "list-pools": _running, "reload": _running, "export-keys": _running,
    "import-swanctl": _import_swanctl,
    "fastpath": _fastpath,
    "caps": _caps,
    "systemd-unit": _systemd,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only the family of ``command`` when it names a verb: a restarted fastpath
    or control process then skips importing every other command's dependencies, which under load is most
    of its start-up time."""
    parser = argparse.ArgumentParser(prog="ipsecgw", description="IPsec gateway with a batched ESP data plane.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    own = VERBS.get(command or "")
    for register in (own,) if own else dict.fromkeys(VERBS.values()):
        register(sub)
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
