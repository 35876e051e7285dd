"""cffi builder for fastpath._dpdk: DPDK (EAL, ethdev, cryptodev, security) through the glue in dpdk_glue.c.

Built against ``pkg-config libdpdk`` (Debian 12: DPDK 22.11).  When libdpdk is
absent the compile below fails, setup.py records it, and everything else
still installs; ``ipsecgw caps`` then reports DPDK as absent and why.
Drivers (vdevs, PMDs) are not linked: DPDK's EAL loads them from its plugin
directory at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdefs import cdef_text  # noqa: E402
from cdefs.pkgconfig import NotFound, flags  # noqa: E402

MODULE = "fastpath._dpdk"

ffibuilder = FFI()
ffibuilder.cdef(cdef_text("dpdk.h"))

try:
    _libdpdk = flags("libdpdk")
    WHY_NOT: str | None = None
except NotFound as exc:  # the compile below then fails and setup.py records it
    WHY_NOT = f"libdpdk not found by pkg-config (Debian: libdpdk-dev): {exc}"
    print(f"ipsecgw: {WHY_NOT}", file=sys.stderr)
    _libdpdk = {"libraries": ["rte_eal"]}

# pkg-config's cflags carry "-include rte_config.h" and a -march of DPDK's own
# choosing; keep them, since DPDK's inline headers are compiled against them.
_CFLAGS = _libdpdk.get("extra_compile_args", [])

# setuptools wants paths relative to the project root; a direct run compiles
# inside build/cffi, so it needs absolute ones.
_ROOT = str(HERE.parent) + "/" if __name__ == "__main__" else ""

ffibuilder.set_source(
    MODULE,
    "#include <rte_eal.h>\n#include <rte_cryptodev.h>\n#include <rte_ethdev.h>\n"
    "#include <rte_version.h>\n#include \"dpdk.h\"\n",
    sources=[_ROOT + "cdefs/dpdk_glue.c"],
    include_dirs=[_ROOT + "cdefs"] + _libdpdk.get("include_dirs", []),
    library_dirs=_libdpdk.get("library_dirs", []),
    libraries=_libdpdk.get("libraries", []),
    depends=[_ROOT + "cdefs/dpdk.h"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-DALLOW_EXPERIMENTAL_API", *_CFLAGS],
)

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/build_dpdk.py (from the repo root).
    import os
    import shutil

    if WHY_NOT:
        sys.exit(f"not built: {WHY_NOT}")
    os.chdir(HERE.parent)
    built = ffibuilder.compile(tmpdir="build/cffi")
    for stale in (HERE.parent / "fastpath").glob("_dpdk.*so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, HERE.parent / "fastpath")
    print(f"built {built}")
