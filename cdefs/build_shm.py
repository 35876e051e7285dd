"""cffi builder for fastpath._shm: the shared-memory region between control and fastpath."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdefs import cdef_text  # noqa: E402


def _esp_types() -> str:
    """esp.h's constants and structs without its engine functions, which this module does not link."""
    text = cdef_text("esp.h")
    cut = text.find("struct ipsg_engine;")
    if cut < 0:
        raise RuntimeError("cdefs/esp.h changed: 'struct ipsg_engine;' no longer ends its type section")
    return text[:cut]


ffibuilder = FFI()
# shm.h embeds esp.h's structs (SA parameters and counters), so both go into one FFI.
ffibuilder.cdef(_esp_types())
ffibuilder.cdef(cdef_text("shm.h"))

# setuptools wants paths relative to the project root; a direct run compiles
# inside build/cffi, so it needs absolute ones.
_ROOT = str(HERE.parent) + "/" if __name__ == "__main__" else ""

ffibuilder.set_source(
    "fastpath._shm",
    '#include "shm.h"\n',
    sources=[_ROOT + "cdefs/shm.c"],
    include_dirs=[_ROOT + "cdefs"],
    extra_compile_args=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/build_shm.py (from the repo root).
    import os
    import shutil

    os.chdir(HERE.parent)
    built = ffibuilder.compile(tmpdir="build/cffi")
    for stale in (HERE.parent / "fastpath").glob("_shm.*so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, HERE.parent / "fastpath")
    print(f"built {built}")
