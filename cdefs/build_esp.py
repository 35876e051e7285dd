"""cffi builder for fastpath._esp_openssl: the batch ESP core (esp_core.c) on libcrypto (crypto_openssl.c)."""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdefs import cdef_text  # noqa: E402
from cdefs.pkgconfig import NotFound, flags  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(cdef_text("esp.h"))

try:
    _libcrypto = flags("libcrypto")
except NotFound as exc:  # the compile below then fails and setup.py records it
    print(f"ipsecgw: libcrypto not found: {exc}", file=sys.stderr)
    _libcrypto = {"libraries": ["crypto"]}

# setuptools wants paths relative to the project root; a direct run compiles
# inside build/cffi, so it needs absolute ones.
_ROOT = str(HERE.parent) + "/" if __name__ == "__main__" else ""

ffibuilder.set_source(
    "fastpath._esp_openssl",
    '#include "esp.h"\n',
    sources=[_ROOT + "cdefs/esp_core.c", _ROOT + "cdefs/crypto_openssl.c"],
    include_dirs=[_ROOT + "cdefs"] + _libcrypto.get("include_dirs", []),
    library_dirs=_libcrypto.get("library_dirs", []),
    libraries=_libcrypto.get("libraries", []),
    depends=[_ROOT + "cdefs/esp.h", _ROOT + "cdefs/esp_core.h"],
    extra_compile_args=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"]
    + _libcrypto.get("extra_compile_args", []),
)

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/build_esp.py (from the repo root).
    import os
    import shutil

    os.chdir(HERE.parent)
    built = ffibuilder.compile(tmpdir="build/cffi")
    for stale in (HERE.parent / "fastpath").glob("_esp_openssl*.so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, HERE.parent / "fastpath")
    print(f"built {built}")
