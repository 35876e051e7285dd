"""cffi builder for fastpath._kio: kernel packet I/O (TUN, recvmmsg/sendmmsg) and the outbound classifier."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdefs import cdef_text  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(cdef_text("kio.h"))
ffibuilder.cdef(cdef_text("kio_packet.h"))     # AF_PACKET clear side

# setuptools wants paths relative to the project root; a direct run compiles
# inside build/cffi, so it needs absolute ones.
_ROOT = str(HERE.parent) + "/" if __name__ == "__main__" else ""

ffibuilder.set_source(
    "fastpath._kio",
    '#include "kio.h"\n#include "kio_packet.h"\n',
    sources=[_ROOT + "cdefs/kio.c", _ROOT + "cdefs/kio_gso.c", _ROOT + "cdefs/kio_packet.c",
             _ROOT + "cdefs/kio_frag.c"],
    include_dirs=[_ROOT + "cdefs"],
    depends=[_ROOT + "cdefs/kio.h", _ROOT + "cdefs/kio_util.h", _ROOT + "cdefs/shm.h", _ROOT + "cdefs/esp.h",
             _ROOT + "cdefs/kio_packet.h", _ROOT + "cdefs/ip_bytes.h", _ROOT + "cdefs/icmp_too_big.h",
             _ROOT + "cdefs/ip_flow.h"],
    extra_compile_args=["-O2", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/build_kio.py (from the repo root).
    import os
    import shutil

    os.chdir(HERE.parent)
    built = ffibuilder.compile(tmpdir="build/cffi")
    for stale in (HERE.parent / "fastpath").glob("_kio.*so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, HERE.parent / "fastpath")
    print(f"built {built}")
