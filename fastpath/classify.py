"""Outbound classification against the shared-memory SPD, in C (cdefs/kio/kio.c ``kio_classify``).

Per packet read from the TUN: parse the inner IPv4/IPv6 header (extension headers walked, ports of
TCP/UDP/SCTP first fragments), look up the best policy in the region's compiled SPD, and decide:

- PROTECT bound to an SA: ``batch.sa[i]`` = the SA slot (first SA of a bundle);
- PROTECT with no SA: ACQUIRE posted to control (rate-limited per policy by the region), packet held;
- BYPASS, DISCARD, no policy (dropped), malformed;
- IKE (UDP to or from the IKE/NAT-T ports) always bypasses;
- a packet whose ESP form would exceed the outer MTU: IPv4 with DF and IPv6 are rewritten in place into
  ICMP fragmentation-needed / Packet Too Big carrying the largest inner size that fits, to be written
  back to the TUN; IPv4 without DF is TOO_BIG: with ``fragment=True`` it keeps its SA and
  ``Classifier.fragment`` (cdefs/kio/kio_frag.c) cuts it into inner fragments that each fit as one ESP packet
  (RFC 4459 3., RFC 4301 8.: the outer packet never fragments); without, it is dropped.

The same rules in plain Python, which the tests check this against, are tests/support/classify_model.py.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from cdefs.sa import SA
from fastpath.ah_ref import AH_FIXED, icv_field_len
from fastpath.io import kio


def esp_overhead(sa: SA) -> tuple[int, int]:
    """(bytes ESP adds to a tunnel-mode packet besides padding, padding block) for an outbound SA; for an
    AH SA what AH adds (outer header, AH header and the padded ICV field) with block 1, no padding
    (inner_mtu's 2 bytes for ESP's trailer then leave AH packets 2 bytes short of the MTU)."""
    if sa.is_ah:
        integ = sa.integ_alg
        field = icv_field_len(integ, sa.src.version) if integ is not None else 0   # type: ignore[arg-type]
        return (20 if sa.src.version == 4 else 40) + AH_FIXED + field, 1
    enc = sa.enc_alg
    icv = enc.icv_len if enc.aead else (sa.integ_alg.icv_len if sa.integ_alg else 0)
    outer = 20 if sa.src.version == 4 else 40
    return outer + (8 if sa.udp_encap else 0) + 8 + enc.iv_len + icv, enc.block


def inner_mtu(outer_mtu: int, ovh: int, blk: int) -> int:
    """The largest inner packet whose ESP form fits outer_mtu."""
    return max((outer_mtu - ovh) // blk * blk - 2, 0)


class Classifier:
    """Binds a region (fastpath.shm.FastpathRegion) to kio_classify."""

    def __init__(self, region, outer_mtu: int = 1500, ike_port: int = 500, natt_port: int = 4500,
                 icmp_src4: str | None = None, icmp_src6: str | None = None, fragment: bool = False):
        kio.need_lib()
        from fastpath import shm as fshm

        ffi = kio.ffi
        self.region = region
        n_sa = region.caps.n_sa
        self.ovh = np.zeros(n_sa, dtype=np.uint16)
        self.blk = np.zeros(n_sa, dtype=np.uint8)
        self._keep = [ffi.from_buffer(self.ovh), ffi.from_buffer(self.blk)]
        c = ffi.new("struct kio_cls *")

        def fn(name: str):
            p = fshm.ffi.cast("uintptr_t", fshm.ffi.addressof(fshm.lib, name))
            return ffi.cast("void *", int(p))

        c.shm = ffi.cast("void *", int(fshm.ffi.cast("uintptr_t", region.handle)))
        c.spd_lookup = fn("ipsg_spd_lookup")
        c.acquire = fn("ipsg_shm_acquire")
        c.ovh = ffi.cast("uint16_t *", self._keep[0])
        c.blk = ffi.cast("uint8_t *", self._keep[1])
        c.n_sa = n_sa
        c.outer_mtu = outer_mtu
        c.ike_port = ike_port
        c.natt_port = natt_port
        if icmp_src4:
            ffi.memmove(c.icmp_src4, ipaddress.IPv4Address(icmp_src4).packed, 4)
        if icmp_src6:
            ffi.memmove(c.icmp_src6, ipaddress.IPv6Address(icmp_src6).packed, 16)
        c.acquire_on = 1
        c.fragment = int(fragment)
        self.c = c
        self._cursor = ffi.new("uint32_t *")
        self._now = fshm.lib.ipsg_shm_now_ns
        self.verdict = None

    @property
    def acquires(self) -> int:
        return int(self.c.acquires)

    def set_sa(self, slot: int, sa: SA | None) -> None:
        """Record an outbound SA's overhead for the MTU check (None: forget it)."""
        if sa is None:
            self.ovh[slot] = self.blk[slot] = 0
        else:
            self.ovh[slot], self.blk[slot] = esp_overhead(sa)

    def classify(self, kb: kio.KBatch, n: int, verdict: np.ndarray, acquire: bool = True) -> int:
        """Fill verdict[:n] and kb.batch.sa[:n]; returns the PROTECT count."""
        self.c.now_ns = self._now()
        self.c.acquire_on = int(acquire)
        return kio.lib.kio_classify(self.c, kb.c, n, kio.ffi.from_buffer(verdict))

    def fragment(self, kb: kio.KBatch, n: int, verdict: np.ndarray, dst: kio.KBatch,
                 cursor: int = 0) -> tuple[int, int]:
        """Cut kb's TOO_BIG packets (from index cursor on) into fragments in dst's slots from 0, bound to
        their SA; (fragments written, cursor for the next call: n when done).  Call it before the engine
        sees kb, and again with the returned cursor while it is below n (dst was full)."""
        self._cursor[0] = cursor
        m = kio.lib.kio_fragment(self.c, kb.c, n, kio.ffi.from_buffer(verdict), dst.c, 0, self._cursor)
        dst.batch.n = m
        return int(m), int(self._cursor[0])
