"""The shipped systemd unit, checked by systemd's own ``systemd-analyze verify`` (Debian's systemd package, 252
on Debian 12) as ``ipsecgw systemd-unit`` prints it; skipped where systemd-analyze is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from control.verbs.systemd_unit import SHIPPED_CONFIG, SHIPPED_EXE, unit_text

ANALYZE = shutil.which("systemd-analyze")
ROOT = Path(__file__).resolve().parents[2]


def _printed(tmp_path: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "control.cli", "systemd-unit", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=True)
    return r.stdout


def test_printed_unit_names_this_installation(tmp_path: Path) -> None:
    exe = tmp_path / "ipsecgw"
    text = _printed(tmp_path, "--exe", str(exe), "-c", "gw.yaml")
    assert f"ExecStart={exe} run -c {ROOT / 'gw.yaml'}\n" in text
    assert f"ExecReload={exe} reload -c {ROOT / 'gw.yaml'}\n" in text
    assert SHIPPED_EXE not in text and SHIPPED_CONFIG not in text
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "KillMode=mixed"):
        assert f"\n{line}\n" in text
    assert any(line.startswith("WatchdogSec=") for line in text.splitlines())
    caps = next(line for line in text.splitlines() if line.startswith("CapabilityBoundingSet="))
    for cap in ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_NET_BIND_SERVICE"):
        assert cap in caps
    assert unit_text() == (ROOT / "control" / "systemd" / "ipsecgw.service").read_text()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = tmp_path / "ipsecgw"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "ipsecgw.service"
    unit.write_text(_printed(tmp_path, "--exe", str(exe), "-c", str(tmp_path / "gw.yaml")))
    r = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ipsecgw.service" not in r.stderr, r.stderr
    # the check can fail: a misspelt directive and a missing executable are reported
    bad = tmp_path / "bad" / "ipsecgw.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("NotifyAccess=main", "NotifyAcess=main")
                   .replace(str(exe), str(tmp_path / "missing")))
    r = subprocess.run([ANALYZE, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "NotifyAcess" in r.stderr and "missing" in r.stderr, r.stderr
