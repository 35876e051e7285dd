"""What every cffi builder in cdefs/ shares (build_*.py keep only what differs).

A builder runs two ways: setup.py's ``cffi_modules`` imports it and compiles from
the project root, and a developer runs ``python cdefs/<part>/build_X.py`` to rebuild the
module in place.  A missing library never raises here: the builder still defines
its ``ffibuilder``, the compile fails, and setup.py records that and installs the rest.

Two environment variables let a second build sit beside the normal one (``make asan``, tests/asan/):
``IPSECGW_CFLAGS`` is appended to every module's compile and link flags (last, so its -O wins), and
``IPSECGW_BUILD_OUT`` makes a direct rebuild compile under ``<dir>/cffi`` and put the module in
``<dir>/<package>/`` instead of next to the package's sources; ``IPSECGW_EXT_DIR`` (fastpath/__init__.py)
then makes one run import it from there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdefs.pkgconfig import NotFound, flags

ROOT = Path(__file__).resolve().parent.parent
CFLAGS_ENV = "IPSECGW_CFLAGS"
BUILD_OUT_ENV = "IPSECGW_BUILD_OUT"


def extra_flags() -> list[str]:
    """IPSECGW_CFLAGS split as a shell would: flags every module is compiled and linked with, after its own."""
    return shlex.split(os.environ.get(CFLAGS_ENV, ""))


def pkg_flags(package: str, fallback_libraries: Sequence[str],
              hint: str = "") -> tuple[dict[str, list[str]], str | None]:
    """pkg-config's set_source arguments for package, or (link the fallback libraries, why pkg-config failed)."""
    try:
        return flags(package), None
    except NotFound as exc:  # the compile then fails (or finds the library anyway) and setup.py records it
        why = f"{package} not found by pkg-config{hint}: {exc}"
        print(f"ipsecgw: {why}", file=sys.stderr)
        return {"libraries": list(fallback_libraries)}, why


def set_source(ffibuilder: Any, module: str, prelude: str, *, direct: bool, sources: Sequence[str],
               depends: Sequence[str] = (), lib: dict[str, list[str]] | None = None,
               libraries: Sequence[str] = (), cflags: Sequence[str] = ()) -> None:
    """ffibuilder.set_source with file paths under cdefs/ (sources, depends: ``"esp/esp_core.c"``) and a
    library's pkg-config flags.  cdefs/ itself is the include directory, so the prelude and the sources
    name another part's header by its path (``#include "esp/esp.h"``).

    direct: the builder runs as ``__main__`` (a developer rebuild) rather than under setup.py.
    """
    lib = lib or {}
    # setuptools wants paths relative to the project root; a direct run compiles
    # inside build/cffi, so it needs absolute ones.
    cdefs = f"{ROOT}/cdefs" if direct else "cdefs"
    extra = extra_flags()
    ffibuilder.set_source(
        module,
        prelude,
        sources=[f"{cdefs}/{name}" for name in sources],
        include_dirs=[cdefs, *lib.get("include_dirs", [])],
        library_dirs=lib.get("library_dirs", []),
        libraries=[*libraries, *lib.get("libraries", [])],
        depends=[f"{cdefs}/{name}" for name in depends],
        extra_compile_args=[*cflags, *lib.get("extra_compile_args", []), *extra],
        extra_link_args=extra,
    )


def rebuild(ffibuilder: Any, module: str, why_not: str | None = None) -> None:
    """Developer rebuild without reinstalling: compile module and put it next to its package's sources."""
    if why_not:
        sys.exit(f"not built: {why_not}")
    os.chdir(ROOT)
    out = os.environ.get(BUILD_OUT_ENV)
    base = Path(out).resolve() if out else ROOT
    built = ffibuilder.compile(tmpdir=str(base / "cffi") if out else "build/cffi")
    package, name = module.rsplit(".", 1)
    target = base.joinpath(*package.split("."))
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(f"{name}.*so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, target)
    print(f"built {built}")
