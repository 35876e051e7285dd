"""The DPDK gateway worker (cdefs/dpdk/dpdk_gw.c) bound to a shared-memory region.

One C call polls both ports for a slice of time; this class sets up the mbuf pool, the two ports, the
ESP core (``LoopEngine``, SA index = region slot) behind a ``PlacedEngine`` (fastpath/dpdk/sessions.py), so
``FastpathRegion.sync`` installs each SA on the rung placement picks from the devices discovered in this
process (a cryptodev or CPU-crypto session, or the core's own ipsec-mb), falling back with reasons; and
hands the C worker pointers to the region's C API in fastpath._shm (``ipsg_spd_lookup``,
``ipsg_shm_acquire``, ``ipsg_shm_seq_reserve``, ``ipsg_shm_spi_lookup``), the same functions the kernel
path's classifier calls, so the SPD lookup, ACQUIRE rate limit and sequence reservation have one
implementation.  EAL must be running in this process (``fastpath.dpdk.eal.init``).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from cdefs.sa import SA, Direction
from fastpath.classify import esp_overhead
from fastpath.dpdk import eal
from fastpath.dpdk.caps import DpdkCaps, discover
from fastpath.dpdk.loop import LoopEngine, Port, _err
from fastpath.dpdk.sessions import PlacedEngine
from fastpath.status import Status

# The worker's outcome counters (IPSG_GW_C_* in cdefs/dpdk/dpdk_loop.h), by name for status and logs.
OUTCOMES = ("protect", "decrypted", "bypass", "discard", "no_policy", "kernel", "malformed", "no_neigh", "tx_full",
            "hold_dropped", "esp_drop", "icmp", "too_big", "local_in")
MISS_MAX = 32


def _fn(name: str) -> Any:
    from fastpath import shm as fshm

    return int(fshm.ffi.cast("uintptr_t", fshm.ffi.addressof(fshm.lib, name)))


class GatewayWorker:
    """clear port <-> ESP <-> protected port, with the SPD and SAs of ``region`` (a FastpathRegion).

    ``caps``: the capability tables placement uses (discovered in this process when None and
    ``discover_caps``); ``on_place(slot, placement)`` is told where each SA landed; ``prefer``
    ("rung:device", e.g. ``cpu-crypto:crypto_aesni_gcm0``) tries that engine first when it is eligible.
    """

    def __init__(self, region: Any, clear: str, protected: str, *, burst: int = 32, outer_mtu: int = 1500,
                 ike_port: int = 500, natt_port: int = 4500, idle_sleep_us: int = 50,
                 icmp_src4: str | None = None, icmp_src6: str | None = None, pool_size: int = 8191,
                 caps: DpdkCaps | None = None, discover_caps: bool = True, on_place: Any = None,
                 prefer: str | None = None):
        ffi, lib = self._ffi, self._lib = eal.load()
        if not eal.initialized():
            raise eal.EalError("start EAL first (fastpath.dpdk.eal.init)")
        if caps is None and discover_caps:
            caps = discover()      # what this process's EAL really has: placement's input
        self.caps = caps
        self._closed = False
        self.ports: list[Port] = []
        self._gw: Any = None
        err = ffi.new("char[256]")
        pool = lib.ipsg_dpdk_pool_new(f"ipsggw{os.getpid()}".encode(), pool_size, 2048 + 128, err, len(err))
        if pool == ffi.NULL:
            raise eal.EalError(_err(ffi, err))
        self._pool = pool
        self.region = region
        self.engine = PlacedEngine(LoopEngine(region.caps.n_sa), caps, ports=[protected],
                                   on_place=on_place, prefer=prefer, on_dead=self._sa_dead)
        try:
            self.ports = [Port(clear, pool), Port(protected, pool)]
            macs = []
            for p in self.ports:
                mac = ffi.new("uint8_t[6]")
                if lib.ipsg_dpdk_port_mac(p.id, mac) != 0:
                    raise eal.EalError(f"{p.name}: no MAC address")
                macs.append(bytes(ffi.buffer(mac)))
            self.clear_mac, self.prot_mac = macs
            c = ffi.new("struct ipsg_dpdk_gw_conf *")
            c.e = self.engine.handle
            c.clear_port, c.prot_port = self.ports[0].id, self.ports[1].id
            c.burst = burst
            c.n_sa = region.caps.n_sa
            c.outer_mtu = outer_mtu
            c.idle_sleep_us = idle_sleep_us
            c.ike_port, c.natt_port = ike_port, natt_port
            ffi.memmove(c.clear_mac, self.clear_mac, 6)
            ffi.memmove(c.prot_mac, self.prot_mac, 6)
            if icmp_src4:
                ffi.memmove(c.icmp_src4, ipaddress.IPv4Address(icmp_src4).packed, 4)
            if icmp_src6:
                ffi.memmove(c.icmp_src6, ipaddress.IPv6Address(icmp_src6).packed, 16)
            from fastpath import shm as fshm

            c.shm = ffi.cast("void *", int(fshm.ffi.cast("uintptr_t", region.handle)))
            c.spd_lookup = ffi.cast("void *", _fn("ipsg_spd_lookup"))
            c.acquire = ffi.cast("void *", _fn("ipsg_shm_acquire"))
            c.seq_reserve = ffi.cast("void *", _fn("ipsg_shm_seq_reserve"))
            c.spi_lookup = ffi.cast("void *", _fn("ipsg_shm_spi_lookup"))
            c.now_ns = ffi.cast("void *", _fn("ipsg_shm_now_ns"))
            gw = lib.ipsg_dpdk_gw_new(c, err, len(err))
            if gw == ffi.NULL:
                raise eal.EalError(_err(ffi, err))
            self._gw = gw
        except Exception:
            self.close()
            raise
        self._st = ffi.new("struct ipsg_dpdk_gw_stats *")
        self._mfam = ffi.new("uint8_t[]", MISS_MAX)
        self._maddr = ffi.new("uint8_t[]", 16 * MISS_MAX)

    # -- between slices

    def run(self, seconds: float) -> bool:
        """Poll both ports for up to seconds (GIL released); True if it ended early because a packet
        needs an SA the engine does not have yet (sync, then ``retry``)."""
        return bool(self._lib.ipsg_dpdk_gw_run(self._gw, seconds))

    def stop(self) -> None:
        """Make a running ``run`` return (safe from another thread or a signal handler)."""
        if self._gw is not None:
            self._lib.ipsg_dpdk_gw_stop(self._gw)

    def retry(self) -> None:
        """Held packets (ACQUIRE, SA not yet synced) and late inbound ESP: once more, after a sync."""
        self._lib.ipsg_dpdk_gw_retry(self._gw)

    def retry_neighbours(self) -> None:
        """Send the packets that waited for a next-hop MAC (after ``set_neighbour``)."""
        self._lib.ipsg_dpdk_gw_retry_neigh(self._gw)

    def expire(self, max_age: float) -> int:
        return int(self._lib.ipsg_dpdk_gw_expire(self._gw, int(max_age * 1e9)))

    def set_sa(self, slot: int, sa: SA | None, direction: Direction | None) -> None:
        """A slot changed (``sync_region``'s callback): MTU facts of an outbound SA, reservation cache reset."""
        ovh, blk = esp_overhead(sa) if sa is not None and direction == Direction.OUT else (0, 0)
        self._lib.ipsg_dpdk_gw_set_sa(self._gw, slot, ovh, blk)

    def _sa_dead(self, slot: int) -> None:
        """A hard-expired SA left the engine: its packets are dropped as hard-expired, not held."""
        if self._gw is not None:
            self._lib.ipsg_dpdk_gw_sa_dead(self._gw, slot)

    def set_neighbour(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: bytes) -> None:
        if self._lib.ipsg_dpdk_gw_neigh_set(self._gw, dst.version, dst.packed, mac) != 0:
            # the table is full (or a probe chain is): start over, what is in use comes back as misses
            self._lib.ipsg_dpdk_gw_neigh_clear(self._gw)
            self._lib.ipsg_dpdk_gw_neigh_set(self._gw, dst.version, dst.packed, mac)

    def misses(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        n = self._lib.ipsg_dpdk_gw_misses(self._gw, self._mfam, self._maddr, MISS_MAX)
        raw = bytes(self._ffi.buffer(self._maddr, 16 * n))
        return [ipaddress.ip_address(raw[16 * i:16 * i + (4 if self._mfam[i] == 4 else 16)]) for i in range(n)]

    def add_local(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return self._lib.ipsg_dpdk_gw_local_add(self._gw, addr.version, addr.packed) == 0

    def stats(self) -> dict[str, Any]:
        s = self._st
        self._lib.ipsg_dpdk_gw_get_stats(self._gw, s)
        out: dict[str, Any] = {k: int(getattr(s, k)) for k in ("rx_clear", "rx_prot", "tx_clear", "tx_prot",
                                                               "polls", "bursts", "acquires", "held", "in_place",
                                                               "copied")}
        out.update({name: int(s.c[i]) for i, name in enumerate(OUTCOMES) if s.c[i]})
        out["esp_drops"] = {Status(i).label: int(s.drops[i]) for i in range(16)
                            if s.drops[i] and i in Status._value2member_map_}
        out["seconds"] = int(s.cycles) / max(int(s.hz), 1)
        return out

    def close(self) -> None:
        """Free held mbufs and the worker, close the ports, zero the engine's keys, free the pool."""
        if self._closed:
            return
        self._closed = True
        if self._gw is not None:
            self._lib.ipsg_dpdk_gw_free(self._gw)
            self._gw = None
        for p in self.ports:
            p.close()
        self.engine.close()
        self._lib.ipsg_dpdk_pool_free(self._pool)
