"""The supervisor's warm standby fastpath (control/supervisor.py starts it): a process that has imported
what ``ipsecgw fastpath`` needs and waits on its stdin; one byte makes it run the command, EOF makes it leave.

Its own module, not the supervisor's ``__main__``: it runs the command line (control.cli), which imports
the run verb, which imports the supervisor.
"""

from __future__ import annotations

import sys


def standby_main(argv: list[str]) -> int:
    """``python -m control.standby fastpath ARGS``: import what ``ipsecgw fastpath ARGS`` needs,
    wait for the supervisor's word on stdin, then run it (EOF instead: exit quietly)."""
    from control import cli

    cli.build_parser(argv[0])            # the command's module and the configuration modules
    import control.fastpath_plan  # noqa: F401 - imported now so that a takeover does not wait for it
    import fastpath.daemon  # noqa: F401 - imported now so that a takeover does not wait for it
    from fastpath import engines

    engines.discover()                   # the engine modules and their C libraries
    try:
        go = sys.stdin.buffer.read(1)
    except KeyboardInterrupt:
        return 0
    if not go:
        return 0
    return cli.main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m control.standby COMMAND [ARGS...] (started by ipsecgw run)")
    sys.exit(standby_main(sys.argv[1:]))
