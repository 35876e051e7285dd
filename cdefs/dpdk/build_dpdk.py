"""cffi builder for fastpath._dpdk: DPDK (EAL, ethdev, cryptodev, security) through the glue in dpdk/dpdk_glue.c.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the project root

from cdefs import cdef_text  # noqa: E402
from cdefs.builder import pkg_flags, rebuild, set_source  # noqa: E402

MODULE = "fastpath._dpdk"

ffibuilder = FFI()
# esp.h comes first: the loop (dpdk_loop.h) runs our ESP core, compiled into this module
# (esp_core.c on intel-ipsec-mb, the same sources as fastpath._esp_ipsecmb), and Python
# installs SAs into it through esp.h's API.
ffibuilder.cdef(cdef_text("esp.h") + "\n" + cdef_text("dpdk.h") + "\n" + cdef_text("dpdk_loop.h")
                + "\n" + cdef_text("crypto_cryptodev.h"))  # per-SA cryptodev / CPU-crypto sessions

_libdpdk, WHY_NOT = pkg_flags("libdpdk", ["rte_eal"], " (Debian: libdpdk-dev)")

# pkg-config's cflags carry "-include rte_config.h" and a -march of DPDK's own
# choosing; keep them (set_source puts them after ours), since DPDK's inline
# headers are compiled against them.
set_source(ffibuilder, MODULE,
           "#include <rte_eal.h>\n#include <rte_cryptodev.h>\n#include <rte_ethdev.h>\n"
           "#include <rte_version.h>\n#include \"dpdk/dpdk.h\"\n#include \"dpdk/dpdk_loop.h\"\n"
           "#include \"dpdk/crypto_cryptodev.h\"\n",
           direct=__name__ == "__main__",
           sources=["dpdk/dpdk_glue.c", "dpdk/dpdk_loop.c", "esp/esp_core.c", "esp/ah_core.c",
                    "esp/crypto_ipsecmb.c", "dpdk/crypto_cryptodev.c", "dpdk/dpdk_gw.c", "dpdk/dpdk_security.c"],
           depends=["dpdk/dpdk.h", "dpdk/dpdk_loop.h", "esp/esp.h", "esp/esp_core.h", "esp/sa_state.h",
                    "esp/ah_core.h", "dpdk/crypto_cryptodev.h", "shm/shm.h", "dpdk/dpdk_slots.h", "dpdk/dpdk_xform.h",
                    "ip/icmp_too_big.h", "ip/ip_bytes.h", "ip/ip_flow.h"],
           lib=_libdpdk, libraries=["IPSec_MB"],
           cflags=["-O3", "-Wall", "-Wno-unused-function", "-DALLOW_EXPERIMENTAL_API"])

if __name__ == "__main__":
    rebuild(ffibuilder, MODULE, WHY_NOT)
