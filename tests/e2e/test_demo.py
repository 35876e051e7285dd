"""``make demo`` end to end: run demo/demo.sh and check that its output shows what the README promises
(the ACQUIRE, the pings, the iperf3 figures, list-sas with counters) and that it leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.strongswan import unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
REASON = unavailable_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=f"demo: {REASON}"),
              pytest.mark.skipif(shutil.which("iperf3") is None or shutil.which("ping") is None,
                                 reason="iperf3 and ping needed (make deps installs them)")]


def test_demo_script(tmp_path: Path) -> None:
    ipsecgw = Path(sys.executable).parent / "ipsecgw"
    if not ipsecgw.exists():
        pytest.skip("the ipsecgw console script is not installed in this environment")
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "demo" / "demo.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, env=dict(os.environ, IPSECGW=str(ipsecgw), IPERF_TIME="3"))
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    assert time.monotonic() - t0 < 120
    assert re.search(r"gw A log: ACQUIRE for site-b/net: 10\.1\.0\.2 -> 10\.2\.0\.2", out), out
    assert re.search(r"64 bytes from 10\.2\.0\.2", out)
    for dst in ("10.2.0.2", "10.3.0.1"):
        assert re.search(rf"host A -> {re.escape(dst)}: 5 packets transmitted, 5 received, 0% packet loss", out), out
    rates = re.findall(r"iperf3 host A -> .*: ([0-9.]+) Mbit/s", out)
    assert len(rates) == 2 and all(float(x) > 1 for x in rates), out
    assert re.search(r"net: INSTALLED, TUNNEL, aes-gcm-128", out)
    assert re.search(r"net-c: INSTALLED, TUNNEL, UDP-encapsulated, aes-gcm-256", out)
    assert re.search(r"out\s+\d+ packets, [0-9.]+ [kMG]?B", out)
    assert "namespaces removed" in out and "demo finished" in out
    # the verdict is the last line and repeats the throughput of both legs
    verdict = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"demo: PASSED in \d+ s: host B ([0-9.]+) Mbit/s; site C ([0-9.]+) Mbit/s", verdict), verdict
    assert re.findall(r"([0-9.]+) Mbit/s", verdict) == rates
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "demo-" not in left
    assert not Path("/dev/shm/ipsecgw-demo-a.shm").exists()
    assert not Path("/run/ipsecgw/demo-a.sock").exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "examples/demo-gw-" not in ps, "a gateway process outlived the demo"


def test_demo_failure_is_a_verdict_and_an_exit_status(tmp_path: Path) -> None:
    """A leg that fails ends the demo with a FAILED verdict naming it and a non-zero exit status."""
    r = subprocess.run(["bash", str(ROOT / "demo" / "demo.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, IPSECGW=str(tmp_path / "no-such-ipsecgw")))
    assert r.returncode == 1
    verdict = r.stderr.rstrip().splitlines()[-1]
    assert re.fullmatch(r"demo: FAILED after \d+ s: .*no-such-ipsecgw missing: run 'make demo'.*", verdict), r.stderr
