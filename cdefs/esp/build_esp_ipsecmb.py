"""cffi builder for fastpath._esp_ipsecmb: the batch ESP and AH cores (esp_core.c, ah_core.c) on intel-ipsec-mb.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the project root

from cdefs import cdef_text  # noqa: E402
from cdefs.builder import rebuild, set_source  # noqa: E402

MODULE = "fastpath._esp_ipsecmb"

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

set_source(ffibuilder, MODULE, '#include "esp/esp.h"\n', direct=__name__ == "__main__",
           sources=["esp/esp_core.c", "esp/ah_core.c",
                    "esp/crypto_ipsecmb.c"],
           depends=["esp/esp.h", "esp/esp_core.h", "esp/sa_state.h", "esp/ah_core.h"],
           libraries=[LIBRARY],
           cflags=["-O3", "-march=x86-64-v2", "-Wall", "-Wno-unused-function"])

if __name__ == "__main__":
    rebuild(ffibuilder, MODULE, _WHY_NOT)
