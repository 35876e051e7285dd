"""Adoption after a restart (supervised mode only): a control process that finds SAs in the region
(its predecessor crashed) keeps them and their policies, so the fastpath keeps forwarding, and
renegotiates the children they belong to.  Once a child is up again its adopted policies go; the
adopted SAs follow a few seconds later (packets in flight), or after ``ADOPT_GRACE`` at the latest."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from typing import Any

from cdefs.sa import Direction
from control.child_installer import spec_of
from control.config import Config, GatewayConfig
from control.ctl import Handler
from control.daemon import Daemon, open_fresh_region
from control.policy_table import PRIO_INSTALLED
from control.sa_records import ChildEntry
from control.shm import ControlRegion, Policy
from control.ts_policies import policies_for

__all__ = ["Adoption", "ADOPT_OVERLAP", "ADOPT_GRACE"]

log = logging.getLogger("ipsecgw.daemon")

ADOPT_OVERLAP = 5.0         # adopted SAs stay this long after their child is renegotiated (packets in flight)
ADOPT_GRACE = 60.0          # ... and no longer than this after the restart in any case


def _sel(p: Policy) -> tuple:
    return (str(ipaddress.ip_network(p.src)), str(ipaddress.ip_network(p.dst)), p.proto, tuple(p.sport),
            tuple(p.dport))


class Adoption:
    """The daemon part that keeps a crashed predecessor's SAs and policies until they are renegotiated."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.adopted_sas: dict[int, tuple[Any, Direction, int]] = {}    # slot -> (SA, direction, sa id)
        self.adopted_policies: dict[tuple[str, str] | None, list[int]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def handlers(self) -> dict[str, Handler]:
        return {}

    def open_region(self, gw: GatewayConfig) -> ControlRegion:
        """The daemon's region opener: attach and adopt what is there, or start afresh."""
        path = gw.shm_path
        if not os.path.exists(path):
            return open_fresh_region(gw)
        region = ControlRegion.attach(path)
        rec = region.reconcile()
        traps = 0
        for index, pol in rec.policies.items():
            if pol.priority > PRIO_INSTALLED:       # a trap: the new traps replace it
                region.delete_policy(index, commit=False)
                traps += 1
                continue
            key = self._key_of(self.daemon.config, pol)
            self.adopted_policies.setdefault(key, []).append(index)
        stale = self.adopted_policies.pop(None, [])
        for index in stale:                 # bound to a child that is no longer configured
            region.delete_policy(index, commit=False)
        region.commit_policies()
        self.adopted_sas = dict(rec.sas)
        log.info("attached to existing region %s: adopted %d SA(s) and %d policy(ies) of a previous control "
                 "process (they keep forwarding until renegotiated)%s%s", path, len(self.adopted_sas),
                 sum(len(v) for v in self.adopted_policies.values()),
                 f", removed {traps + len(stale)} trap/stale policy(ies)" if traps or stale else "",
                 f", repaired {rec.repaired} torn record(s)" if rec.repaired else "")
        return region

    @staticmethod
    def _key_of(config: Config, pol: Policy) -> tuple[str, str] | None:
        sel = _sel(pol)
        for conn in config.connections.values():
            for spec in conn.children:
                if any(_sel(p) == sel for p in policies_for(spec.local_ts, spec.remote_ts, PRIO_INSTALLED)):
                    return conn.name, spec.name
        return None

    def started(self) -> None:
        d = self.daemon
        assert d.installer is not None
        d.installer.installed_listeners.append(self._child_installed)
        if not (self.adopted_sas or self.adopted_policies):
            return
        self._handle = asyncio.get_running_loop().call_later(ADOPT_GRACE, self._expired)
        for conn_name, child_name in [k for k in self.adopted_policies if k is not None]:
            conn = d.config.connections[conn_name]
            spec = spec_of(d.config, conn_name, child_name)
            if spec is None:
                continue
            if conn.can_initiate:
                d.bring_up(conn, spec, "renegotiating after a control restart")
            else:
                log.info("%s/%s: adopted SAs stay until the peer renegotiates (at most %.0f s)", conn_name,
                         child_name, ADOPT_GRACE)
        if not self.adopted_policies:
            self._schedule_removal()

    def _child_installed(self, child: ChildEntry) -> None:
        key = (child.conn, child.name)
        idx = self.adopted_policies.pop(key, None)
        region = self.daemon.region
        if idx and region is not None:
            for index in idx:
                try:
                    region.delete_policy(index, commit=False)
                except KeyError:
                    pass
            region.commit_policies()
            log.info("%s/%s renegotiated: %d adopted policy(ies) removed", key[0], key[1], len(idx))
            if not self.adopted_policies:
                self._schedule_removal()

    def _schedule_removal(self) -> None:
        if self.adopted_sas:
            asyncio.get_running_loop().call_later(ADOPT_OVERLAP, self._remove, "renegotiated")

    def _expired(self) -> None:
        self._handle = None
        if self.adopted_policies or self.adopted_sas:
            self._remove(f"not renegotiated within {ADOPT_GRACE:.0f} s")

    def _remove(self, why: str) -> None:
        region = self.daemon.region
        if region is None:
            return
        n_pol = 0
        for idx in self.adopted_policies.values():
            for index in idx:
                try:
                    region.delete_policy(index, commit=False)
                    n_pol += 1
                except KeyError:
                    pass
        self.adopted_policies.clear()
        if n_pol:
            region.commit_policies()
        n = 0
        for slot in list(self.adopted_sas):
            try:
                region.delete_sa(slot)
                n += 1
            except KeyError:
                pass
        self.adopted_sas.clear()
        if n or n_pol:
            log.info("removed %d adopted SA(s) and %d adopted policy(ies) (%s)", n, n_pol, why)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stopping(self) -> None:
        self._remove("shutdown")
