"""Loaded by every Python process of a `make asan` run (tests/asan/run.py puts this folder on PYTHONPATH).

The sanitized modules need the gcc sanitizer runtimes loaded before anything else, which only LD_PRELOAD
does; but a preload inherited by the programs the tests start (ip, nft, charon, iperf3...) would sanitize
code that is not ours, and iproute2's own strncpy overlaps then abort `ip route`. So the preload is handed
on as IPSECGW_ASAN_PRELOAD instead: a Python process started without it in LD_PRELOAD execs itself again
with it, and one that has it takes it out of its environment before it starts any child.
"""

import os
import sys

_preload = os.environ.get("IPSECGW_ASAN_PRELOAD")
if _preload:
    if os.environ.get("LD_PRELOAD") != _preload:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "LD_PRELOAD": _preload})
    del os.environ["LD_PRELOAD"]
