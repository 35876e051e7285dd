"""The bounded fuzz pass of `make test`: every target of tests/fuzz/ under atheris for FUZZ_TEST_SECONDS
(15 s unless the environment says otherwise), through the same runner as `make fuzz`.  It fails on a
crash (the crasher lands in pytest's tmp dir; the runner's output shows the traceback) and when a target
ran fewer inputs than it should: a target that dies in its set-up or never gets past its first input
would otherwise pass by doing nothing.

The pass runs with a fixed libFuzzer seed (FUZZ_TEST_SEED, 1 unless the environment says otherwise), so
`make test` explores the same inputs on every run and passes or fails the same way: a crash it finds is
a crash each run finds until it is fixed.  Finding new crashes is `make fuzz`'s job, with a new seed each
run; what it finds becomes a case in tests/fuzz/crashers/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.harness import TARGETS

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[2]

SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "15"))
SEED = int(os.environ.get("FUZZ_TEST_SEED", "1"))
# Inputs a target must get through in SECONDS: well under what each does on a loaded 2-core machine
# (docs/fuzzing.md has the rates), far over what a broken set-up would manage.
MIN_RUNS_PER_SECOND = {"esp_inbound": 100, "ah_inbound": 100, "ike_codec": 20, "ike_responder": 100,
                       "config_loader": 20}
LINE = re.compile(r"^fuzz (\S+): (\d+) runs in \d+ s, (.*)$", re.M)


@pytest.mark.slow
def test_every_target_runs_clean_and_far(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tests/fuzz/run.py"), "all", "--seconds", str(SECONDS),
                        "--seed", str(SEED), "--artifacts", str(tmp_path / "crashers")], cwd=ROOT,
                       capture_output=True, text=True, timeout=len(TARGETS) * (SECONDS + 150))
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    seen = {m[0]: (int(m[1]), m[2]) for m in LINE.findall(r.stdout)}
    assert set(seen) == set(TARGETS), r.stdout
    for name, (runs, status) in seen.items():
        assert status == "ok"
        assert runs >= MIN_RUNS_PER_SECOND[name] * SECONDS, f"{name}: only {runs} inputs in {SECONDS} s"
