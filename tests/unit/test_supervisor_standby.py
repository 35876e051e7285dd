"""The supervisor's warm standby fastpath (control/standby.py, started by control/supervisor.py): a process
that has imported what ``ipsecgw fastpath`` needs and waits on its stdin; one byte makes it run the command,
EOF makes it leave."""

from __future__ import annotations

import subprocess
import sys
import time

from support.netns_tools import ROOT

STANDBY = [sys.executable, "-m", "control.standby", "fastpath", "--help"]


def _standby() -> subprocess.Popen:
    p = subprocess.Popen(STANDBY, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    assert p.poll() is None                    # waiting for the word
    return p


def test_standby_runs_the_command_when_told() -> None:
    p = _standby()
    out, err = p.communicate(b"g", timeout=60)
    assert p.returncode == 0, err
    assert b"usage: ipsecgw fastpath" in out      # what `ipsecgw fastpath --help` prints


def test_standby_leaves_quietly_on_eof() -> None:
    p = _standby()
    out, err = p.communicate(b"", timeout=60)
    assert p.returncode == 0 and out == b"", err
