"""ipsecgw data plane: batches, ESP transforms, engines, packet I/O."""

import os as _os

# numpy's bundled OpenBLAS starts a thread per core that spins after every call;
# we never do linear algebra, and on a fastpath core those spinning threads took
# ~3 % of the CPU (perf) from the packet work.  Must be set before numpy loads.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
