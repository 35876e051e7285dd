"""The security policy database as control keeps it: per (connection, child) the SPD entries in the
shared region, what selectors they cover and which SA slots they are bound to (none: a trap, whose
matches the fastpath reports as ACQUIREs)."""

from __future__ import annotations

import logging

from control.config import Config
from control.shm import ControlRegion, Policy
from control.ts_policies import policies_for

__all__ = ["PolicyTable", "PRIO_INSTALLED", "PRIO_TRAP", "Key"]

log = logging.getLogger("ipsecgw.daemon")

PRIO_INSTALLED = 10_000         # SPD priorities (lower wins): negotiated policies beat trap policies
PRIO_TRAP = 20_000

Key = tuple[str, str]           # (connection name, child name)


class PolicyTable:
    def __init__(self, region: ControlRegion):
        self.region = region
        self.indices: dict[Key, list[int]] = {}
        self._selectors: dict[Key, list[Policy]] = {}
        self.bound: dict[Key, tuple[int, ...]] = {}     # ... and the SA slots they point at
        self._key_of: dict[int, Key] = {}

    def key_of(self, index: int) -> Key | None:
        """The (connection, child) an SPD entry belongs to (ACQUIREs name the entry)."""
        return self._key_of.get(index)

    def count(self) -> int:
        return sum(len(v) for v in self.indices.values())

    def install_traps(self, config: Config) -> None:
        for conn in config.connections.values():
            for spec in conn.children:
                if spec.start_action == "trap":
                    self.set_trap((conn.name, spec.name), spec.local_ts, spec.remote_ts)
                    log.info("trap policies for %s/%s installed: %s === %s", conn.name, spec.name,
                             ", ".join(spec.local_ts_text), ", ".join(spec.remote_ts_text))

    def set_trap(self, key: Key, local_ts: list, remote_ts: list) -> None:
        self.set(key, policies_for(local_ts, remote_ts, PRIO_TRAP), ())

    def set_protect(self, key: Key, local_ts: list, remote_ts: list, slot_out: int) -> None:
        self.set(key, policies_for(local_ts, remote_ts, PRIO_INSTALLED), (slot_out,))

    def set(self, key: Key, pols: list[Policy], sas: tuple[int, ...]) -> None:
        """Make ``key``'s SPD entries exactly ``pols``, bound to ``sas`` (empty: trap, ACQUIRE on match)."""
        region = self.region
        cur = self.indices.get(key)
        if cur is not None and self._selectors.get(key) == pols:
            for index in cur:
                region.bind_policy(index, sas)      # same selectors: rebinding needs no recompile
            self.bound[key] = sas
            return
        self.drop(key, commit=False)
        idx = []
        for i, p in enumerate(pols):
            index = region.add_policy(Policy(p.src, p.dst, p.proto, p.sport, p.dport, p.action, p.priority,
                                             policy_id=hash((key, i)) & 0xFFFFFFFF), sas, commit=False)
            idx.append(index)
            self._key_of[index] = key
        self.indices[key], self._selectors[key], self.bound[key] = idx, pols, sas
        region.commit_policies()

    def drop(self, key: Key, commit: bool = True) -> None:
        idx = self.indices.pop(key, None)
        self._selectors.pop(key, None)
        self.bound.pop(key, None)
        if not idx:
            return
        for index in idx:
            self.region.delete_policy(index, commit=False)
            self._key_of.pop(index, None)
        if commit:
            self.region.commit_policies()

    def drop_all(self) -> None:
        for key in list(self.indices):
            self.drop(key, commit=False)
        self.region.commit_policies()
