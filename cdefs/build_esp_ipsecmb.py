"""cffi builder for fastpath._esp_ipsecmb: the batch ESP core (esp_core.c) on intel-ipsec-mb.

intel-ipsec-mb ships no pkg-config file, so whether it is usable is found by
compiling and linking a probe against it.  When the probe fails the module
build fails (setup.py records it and the other engines remain).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cdefs import cdef_text  # noqa: E402

LIBRARY = "IPSec_MB"
_PROBE = """
#include <intel-ipsec-mb.h>
int main(void)
{
    IMB_MGR *m = alloc_mb_mgr(0);
    free_mb_mgr(m);
    return IMB_VERSION_NUM >= IMB_VERSION(1, 0, 0) ? 0 : 1;
}
"""


def probe() -> str | None:
    """None when a program using intel-ipsec-mb (>= 1.0) compiles and links here, else why not."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not shutil.which(cc[0]):
        return f"no C compiler ({cc[0]})"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_PROBE)
        try:
            run = subprocess.run([*cc, str(src), "-o", str(Path(tmp) / "probe"), f"-l{LIBRARY}"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"probe compile failed: {exc}"
    if run.returncode != 0:
        return "intel-ipsec-mb >= 1.0 headers/library not found (Debian: libipsec-mb-dev): " + \
               (run.stderr.strip().splitlines() or ["?"])[-1]
    return None


ffibuilder = FFI()
ffibuilder.cdef(cdef_text("esp.h"))

_WHY_NOT = probe()
if _WHY_NOT:  # the compile below then fails and setup.py records it
    print(f"ipsecgw: {_WHY_NOT}", file=sys.stderr)

# setuptools wants paths relative to the project root; a direct run compiles
# inside build/cffi, so it needs absolute ones.
_ROOT = str(HERE.parent) + "/" if __name__ == "__main__" else ""

ffibuilder.set_source(
    "fastpath._esp_ipsecmb",
    '#include "esp.h"\n',
    sources=[_ROOT + "cdefs/esp_core.c", _ROOT + "cdefs/crypto_ipsecmb.c"],
    depends=[_ROOT + "cdefs/esp.h", _ROOT + "cdefs/esp_core.h"],
    include_dirs=[_ROOT + "cdefs"],
    libraries=[LIBRARY],
    extra_compile_args=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    # Developer rebuild without reinstalling: python cdefs/build_esp_ipsecmb.py (from the repo root).
    if _WHY_NOT:
        sys.exit(f"not built: {_WHY_NOT}")
    os.chdir(HERE.parent)
    built = ffibuilder.compile(tmpdir="build/cffi")
    for stale in (HERE.parent / "fastpath").glob("_esp_ipsecmb*.so"):
        stale.unlink()  # an older build under another suffix would shadow this one
    shutil.copy(built, HERE.parent / "fastpath")
    print(f"built {built}")
