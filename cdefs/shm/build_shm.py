"""cffi builder for fastpath._shm: the shared-memory region between control and fastpath."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the project root

from cdefs import cdef_text  # noqa: E402
from cdefs.builder import rebuild, set_source  # noqa: E402

MODULE = "fastpath._shm"


def _esp_types() -> str:
    """esp.h's constants and structs without its engine functions, which this module does not link."""
    text = cdef_text("esp.h")
    cut = text.find("struct ipsg_engine;")
    if cut < 0:
        raise RuntimeError("cdefs/esp/esp.h changed: 'struct ipsg_engine;' no longer ends its type section")
    return text[:cut]


ffibuilder = FFI()
# shm.h embeds esp.h's structs (SA parameters and counters), so both go into one FFI.
ffibuilder.cdef(_esp_types())
ffibuilder.cdef(cdef_text("shm.h"))

set_source(ffibuilder, MODULE, '#include "shm/shm.h"\n', direct=__name__ == "__main__", sources=["shm/shm.c"],
           depends=["shm/shm.h", "esp/esp.h"],
           cflags=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"])

if __name__ == "__main__":
    rebuild(ffibuilder, MODULE)
