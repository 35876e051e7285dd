"""A machine without a C compiler still installs the package and runs the reference engine."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_builds_and_runs_without_a_compiler(tmp_path: Path) -> None:
    env = dict(os.environ, CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list((tmp_path / "dist").glob("ipsecgw-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert not [n for n in names if n.endswith(".so")], "a compiled module was built with no compiler"
    assert "fastpath/engines/reference.py" in names and "cdefs/esp/esp.h" in names

    target = tmp_path / "site"
    zipfile.ZipFile(wheels[0]).extractall(target)
    # -S skips .pth files, so the development checkout's editable-install hook cannot shadow the wheel;
    # the dependencies still come from this environment's site-packages.
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *site_dirs]))
    # Run from an empty directory so the checkout (with its built modules) is not importable.
    probe = ("from fastpath.engines import create, discover\n"
             "e = create('best'); print(e.name)\n"
             "print([(i.name, i.present) for i in discover()])\n")
    run = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    first, engines = run.stdout.splitlines()
    assert first == "reference"
    assert "('openssl', False)" in engines
    caps = subprocess.run([sys.executable, "-S", "-c", "from control.cli import main; main(['caps'])"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert caps.returncode == 0, caps.stderr
    assert "openssl" in caps.stdout and "absent" in caps.stdout
