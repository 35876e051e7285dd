"""ipsecgw data plane: batches, ESP transforms, engines, packet I/O."""

import os as _os

# numpy's bundled OpenBLAS starts a thread per core that spins after every call;
# we never do linear algebra, and on a fastpath core those spinning threads took
# ~3 % of the CPU (perf) from the packet work.  Must be set before numpy loads.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# A second build of the compiled modules (fastpath._esp_openssl, ...) in another folder, imported instead of
# the ones next to these sources for this process and its children: `make asan` runs the C-facing tests
# on sanitized modules this way while the normal build stays untouched. The folder is searched first for
# every fastpath submodule, so it must hold only those .so files (tests/asan/run.py checks each came from it).
_ext_dir = _os.environ.get("IPSECGW_EXT_DIR")
if _ext_dir:
    __path__.insert(0, _os.path.abspath(_ext_dir))
