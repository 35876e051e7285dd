"""Run fuzz targets: ``python tests/fuzz/run.py TARGET|all --seconds N [--runs N] [--corpus DIR]``.

Each target runs in its own subprocess (tests/fuzz/harness.py under atheris), so a crash in one does not
hide the others.  Exit status 0 when no target crashed; otherwise 1, with each crasher written to
``--artifacts``/<target>/ (default tests/fuzz/crashers/<target>/, where the replay test picks it up: fix
the product, keep the file as the regression case).  The last line per target is
``fuzz <target>: <runs> runs in <s> s, <status>`` (the runs as libFuzzer counted them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fuzz.harness import TARGETS  # noqa: E402

DONE = re.compile(r"Done (\d+) runs in (\d+) second")
PROGRESS = re.compile(r"^#(\d+)\s", re.M)


def runs_done(log: str) -> int:
    """Inputs executed, from libFuzzer's closing line (or its last progress line after a crash)."""
    m = DONE.findall(log)
    if m:
        return int(m[-1][0])
    p = PROGRESS.findall(log)
    return int(p[-1]) if p else 0


def run_target(name: str, seconds: int, runs: int | None, corpus: Path | None, artifacts: Path,
               log_dir: Path, seed: int | None = None) -> tuple[int, int, float]:
    """(exit status, inputs run, wall seconds) of one target."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        cdir = corpus / name if corpus else Path(tmp) / "corpus"
        cdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(HERE / "harness.py"), name, str(cdir),
                f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/", "-max_len=4096"]
        if runs is not None:
            args.append(f"-runs={runs}")
        if seed is not None:
            args.append(f"-seed={seed}")
        env = dict(os.environ, PYTHONHASHSEED="0")
        t0 = time.monotonic()
        log_path = log_dir / f"{name}.log"
        with open(log_path, "w") as log:
            try:
                # the bound past libFuzzer's own: a hang in C that its timer cannot interrupt
                rc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent.parent,
                                    timeout=seconds + 120).returncode
            except subprocess.TimeoutExpired:
                log.write(f"\nfuzz: {name} did not finish within {seconds + 120} s (hang)\n")
                rc = 124
        text = log_path.read_text(errors="replace")
    return rc, runs_done(text), time.monotonic() - t0


def _in_venv() -> None:
    """Started by a Python without atheris (``python tests/fuzz/run.py`` from the repo root): go on in the
    project's virtualenv, which ``make venv`` made with it."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        venv = HERE.parent.parent / ".venv" / "bin" / "python"
        # sys.prefix, not the interpreter's path: a venv's python is a symlink to the one it was made from
        if venv.exists() and Path(sys.prefix).resolve() != venv.parent.parent.resolve():
            os.execv(str(venv), [str(venv), str(Path(__file__).resolve()), *sys.argv[1:]])
        raise SystemExit("fuzz: atheris is not installed here; run `make venv` (it is in the test extra)") from None


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _in_venv()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--seconds", type=int, default=60, help="time per target (libFuzzer -max_total_time)")
    ap.add_argument("--runs", type=int, default=None, help="stop a target after this many inputs")
    ap.add_argument("--seed", type=int, default=None,
                    help="libFuzzer's -seed (it also seeds the custom mutators): the same inputs in the same "
                         "order, as far as the time allows; default a new one each run")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="keep each target's corpus in DIR/<target> (default: a temporary one, seeds only)")
    ap.add_argument("--artifacts", type=Path, default=HERE / "crashers",
                    help="crashers go to DIR/<target>/ (default tests/fuzz/crashers)")
    ap.add_argument("--logs", type=Path, default=None, help="keep each target's libFuzzer output in DIR")
    a = ap.parse_args(argv)
    targets = TARGETS if a.target == "all" else (a.target,)
    failed = []
    with tempfile.TemporaryDirectory(prefix="fuzz-logs-") as tmp:
        log_dir = a.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in targets:
            rc, n, wall = run_target(name, a.seconds, a.runs, a.corpus, a.artifacts / name, log_dir, a.seed)
            status = "ok" if rc == 0 else f"CRASH (exit {rc})"
            if rc != 0:
                failed.append(name)
                sys.stdout.write((log_dir / f"{name}.log").read_text(errors="replace")[-6000:])
            print(f"fuzz {name}: {n} runs in {wall:.0f} s, {status}", flush=True)
    if failed:
        print(f"fuzz: crashed: {', '.join(failed)}; crashers in {a.artifacts}/<target>/", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
