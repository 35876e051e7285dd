"""`make asan`: the project's C code under AddressSanitizer and UBSan, and no report allowed.

    python tests/asan/run.py [--fuzz-seconds N] [--no-fuzz]

1. build: every cffi module (cdefs/*/build_*.py) again with SANITIZE, into build/asan/fastpath/
   (IPSECGW_BUILD_OUT, IPSECGW_CFLAGS: cdefs/builder.py); the normal modules next to the sources are
   not touched, so `make test` afterwards runs them as before.
2. check: each module imports from build/asan/ (IPSECGW_EXT_DIR: fastpath/__init__.py) and carries
   the ASan and UBSan hooks; a deliberate heap overread through fastpath._esp_openssl must be reported,
   or the sanitizer is not live and a clean run would prove nothing.
3. the C-facing tests (C_FACING below, the only list of them) on the sanitized modules.
4. a fuzz pass over mutated ESP: tests/fuzz/run.py's esp_inbound target.

CPython is not sanitized: the gcc runtimes are preloaded into every Python process of the run (and only
those: site/sitecustomize.py). Leak detection is off because CPython keeps its objects until exit, so
every run would "leak"; PYTHONMALLOC=malloc makes Python's own buffers (bytes handed to C) plain malloc
blocks, so an overrun past one is seen rather than landing inside a pymalloc arena. Every process writes
its reports to build/asan/reports/; any file there, or "ERROR: AddressSanitizer" / "runtime error:" in
a step's output, fails the run even when the test that caused it passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "asan"
EXT_DIR = OUT / "fastpath"
REPORTS = OUT / "reports"
SITE = Path(__file__).resolve().parent / "site"

# -O1 keeps the stack traces readable and the run quick; -fno-sanitize-recover makes UBSan reports fatal.
# CPython compiles extensions with -fwrapv (sysconfig CFLAGS), which defines signed overflow and so turns
# UBSan's check for it off; -fno-wrapv puts it back, so C that would overflow an int is reported here.
SANITIZE = ("-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1 "
            "-fno-wrapv")
MODULES = ("_shm", "_esp_openssl", "_esp_ipsecmb", "_kio", "_dpdk")
MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# The tests that drive our C code: engines and ESP batches, the shared region, kio's classifier,
# fragmentation, ICMP errors and packet I/O, the DPDK loop, sessions and gateway on virtual devices,
# and gateway pairs whose fastpath runs all of it. Tests that need root (tests/e2e) skip themselves
# without it.
C_FACING = (
    "tests/unit/test_engine_*.py", "tests/unit/test_kat.py", "tests/unit/test_properties.py",
    "tests/unit/test_cli_pcap.py", "tests/unit/test_shm_*.py", "tests/unit/test_daemon_rekey_order.py",
    "tests/unit/test_fastpath_classify.py", "tests/unit/test_fastpath_steering.py", "tests/unit/test_fragment.py",
    "tests/unit/test_icmp_too_big.py",
    "tests/unit/test_ah_*.py", "tests/unit/test_cli_pcap_ah.py",   # AH through the C engines (ah_core.c)
    "tests/e2e/test_kio*.py", "tests/e2e/test_gateway_afpacket.py",   # test_kio_ah: kio_ah6.c
    "tests/e2e/test_fastpath_e2e.py", "tests/e2e/test_dpdk_*.py",
    "tests/e2e/test_gateway_ah.py",       # AH through ipsecgw run: kernel I/O and the C engines' AH together
    "tests/unit/test_fuzz_crashers.py",   # every crasher the fuzzers kept, the ESP ones through the C engines
)
# what the globs above match but must not run here, and why
LEFT_OUT = {
    "tests/unit/test_engine_memory.py": "asserts flat RSS, which ASan's quarantine of freed blocks grows by design",
}

# the canary: an 8-byte malloc'd key read as 40 bytes by ipsg_hmac's memcpy
CANARY = """
import numpy as np
from fastpath._esp_openssl import ffi, lib
key = np.zeros(8, np.uint8)
lib.ipsg_hmac(lib.IPSG_INTEG_HMAC_SHA256_128, ffi.from_buffer(key), 40, ffi.NULL, 0, ffi.new("uint8_t[64]"))
"""


class Failed(Exception):
    """A step of the run did not pass; the message says which and why."""


def runtimes() -> str:
    """The gcc runtimes the sanitized modules link against, for LD_PRELOAD."""
    cc = os.environ.get("CC", "gcc").split()[0]
    paths = []
    for lib in ("libasan.so", "libubsan.so"):
        path = subprocess.run([cc, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise Failed(f"{cc} has no {lib} (Debian: gcc's libasan8 and libubsan1 come with gcc)")
        paths.append(os.path.realpath(path))
    return " ".join(paths)


def sanitized_env(reports: Path) -> dict[str, str]:
    """The environment of a step: sanitized modules first, the runtimes preloaded, reports into files."""
    preload = runtimes()
    env = dict(os.environ)
    env.update({
        "IPSECGW_EXT_DIR": str(EXT_DIR),
        "IPSECGW_ASAN_PRELOAD": preload,
        "LD_PRELOAD": preload,
        "PYTHONPATH": os.pathsep.join([str(SITE), *filter(None, [env.get("PYTHONPATH")])]),
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": f"detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path={reports}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path={reports}/ubsan",
    })
    return env


def run_step(name: str, argv: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Run argv with its output shown and kept in build/asan/<name>.log; its exit status and output."""
    print(f"== asan: {name}: {' '.join(argv)}", flush=True)
    lines = []
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    output = "".join(lines)
    (OUT / f"{name}.log").write_text(output)
    return proc.returncode, output


def reported(output: str, reports: Path) -> list[str]:
    """Every sanitizer report of a step: the files its processes wrote and the lines of its output."""
    found = [f"{p}:\n{p.read_text(errors='replace')}" for p in sorted(reports.glob("*")) if p.stat().st_size]
    found += [line for line in output.splitlines() if any(m in line for m in MARKERS)]
    return found


def checked_step(name: str, argv: Sequence[str]) -> None:
    reports = REPORTS / name
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    rc, output = run_step(name, argv, sanitized_env(reports))
    found = reported(output, reports)
    if found:
        raise Failed(f"{name}: {len(found)} sanitizer report(s):\n" + "\n".join(found))
    if rc != 0:
        raise Failed(f"{name}: exit status {rc} (output in {OUT / f'{name}.log'})")


def build() -> None:
    shutil.rmtree(EXT_DIR, ignore_errors=True)  # a module left from an older run would hide a failed build
    env = dict(os.environ, IPSECGW_BUILD_OUT=str(OUT), IPSECGW_CFLAGS=SANITIZE)
    for builder in sorted(ROOT.glob("cdefs/*/build_*.py")):
        rc, _ = run_step(f"build-{builder.stem}", [sys.executable, str(builder)], env)
        if rc != 0:
            raise Failed(f"{builder.relative_to(ROOT)} did not build with {SANITIZE}")


def check_modules() -> None:
    """Each module loads from build/asan/ with ASan and UBSan hooks in it, and a planted overread is caught."""
    probe = ("import importlib, sys\n"
             f"for m in {MODULES!r}:\n"
             "    print(importlib.import_module('fastpath.' + m).__file__)\n")
    reports = REPORTS / "check"
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    env = sanitized_env(reports)
    rc, output = run_step("check", [sys.executable, "-c", probe], env)
    files = [Path(line) for line in output.splitlines() if line.endswith(".so")]
    if rc != 0 or len(files) != len(MODULES) or reported(output, reports):
        raise Failed(f"the sanitized modules do not all import cleanly: {output.strip()}")
    for f in files:
        if f.parent != EXT_DIR:
            raise Failed(f"{f} imported instead of the sanitized build in {EXT_DIR}")
        blob = f.read_bytes()
        if b"__asan_init" not in blob or b"__ubsan_handle_" not in blob:
            raise Failed(f"{f} has no ASan/UBSan instrumentation")
    rc, output = run_step("canary", [sys.executable, "-c", CANARY], env)
    if rc == 0 or not any("heap-buffer-overflow" in r for r in reported(output, reports)):
        raise Failed("a planted heap overread in fastpath._esp_openssl was not reported: the sanitizer is not live")
    print("== asan: the planted overread was reported and failed its process, as it must", flush=True)


def c_facing_tests() -> list[str]:
    args = []
    for pattern in C_FACING:
        matched = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
        if not matched:
            raise Failed(f"C_FACING names {pattern}, which matches no test file")
        args += [m for m in matched if m not in LEFT_OUT]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz-seconds", type=int, default=60, help="length of the ESP fuzz pass (default 60)")
    ap.add_argument("--no-fuzz", action="store_true", help="build, check and run the tests only")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        build()
        check_modules()
        checked_step("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *c_facing_tests()])
        if not args.no_fuzz:
            fuzz = ROOT / "tests" / "fuzz" / "run.py"
            if not fuzz.exists():
                raise Failed(f"{fuzz.relative_to(ROOT)} is missing: no ESP fuzz pass (--no-fuzz to run without)")
            checked_step("fuzz", [sys.executable, str(fuzz), "esp_inbound", "--seconds", str(args.fuzz_seconds)])
    except Failed as exc:
        print(f"make asan: FAILED: {exc}", file=sys.stderr)
        return 1
    print("make asan: clean (no AddressSanitizer or UBSan report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
