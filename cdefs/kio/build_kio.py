"""cffi builder for fastpath._kio: kernel packet I/O (TUN, recvmmsg/sendmmsg) and the outbound classifier."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the project root

from cdefs import cdef_text  # noqa: E402
from cdefs.builder import rebuild, set_source  # noqa: E402

MODULE = "fastpath._kio"

ffibuilder = FFI()
ffibuilder.cdef(cdef_text("kio.h"))
ffibuilder.cdef(cdef_text("kio_packet.h"))     # AF_PACKET clear side

set_source(ffibuilder, MODULE, '#include "kio/kio.h"\n#include "kio/kio_packet.h"\n', direct=__name__ == "__main__",
           sources=["kio/kio.c", "kio/kio_gso.c", "kio/kio_packet.c", "kio/kio_frag.c", "kio/kio_ah6.c"],
           depends=["kio/kio.h", "kio/kio_util.h", "shm/shm.h", "esp/esp.h", "kio/kio_packet.h", "ip/ip_bytes.h",
                    "ip/icmp_too_big.h", "ip/ip_flow.h"],
           cflags=["-O2", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"])

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/kio/build_kio.py (from the repo root).
    rebuild(ffibuilder, MODULE)
