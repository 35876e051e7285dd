"""cffi builder for fastpath._esp_openssl: the batch ESP and AH cores (esp_core.c, ah_core.c) on libcrypto."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the project root

from cdefs import cdef_text  # noqa: E402
from cdefs.builder import pkg_flags, rebuild, set_source  # noqa: E402

MODULE = "fastpath._esp_openssl"

ffibuilder = FFI()
ffibuilder.cdef(cdef_text("esp.h"))

# Without a libcrypto.pc, -lcrypto may still link, so a pkg-config failure does not stop the build.
_libcrypto, _ = pkg_flags("libcrypto", ["crypto"])

set_source(ffibuilder, MODULE, '#include "esp/esp.h"\n', direct=__name__ == "__main__",
           sources=["esp/esp_core.c", "esp/ah_core.c",
                    "esp/crypto_openssl.c"],
           depends=["esp/esp.h", "esp/esp_core.h", "esp/sa_state.h", "esp/ah_core.h"],
           lib=_libcrypto,
           cflags=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"])

if __name__ == "__main__":
    rebuild(ffibuilder, MODULE)
