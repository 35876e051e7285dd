"""DPDK data plane binding (cffi module ``fastpath._dpdk``, built from cdefs/dpdk/dpdk.h and cdefs/dpdk/dpdk_glue.c).

``eal`` starts DPDK's Environment Abstraction Layer once per process; ``caps``
discovers what the ethdev ports and cryptodevs offer.  Nothing here is needed
for the kernel-I/O fastpath: importing this package never loads DPDK, and
``eal.availability()`` says whether and why not it could.
"""

from __future__ import annotations

from fastpath.dpdk.eal import DpdkUnavailable, EalError, availability

__all__ = ["DpdkUnavailable", "EalError", "availability"]
