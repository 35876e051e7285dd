"""``ipsecgw list-pools``: each address pool with its size, how many leases are online, and the leases
(address, identity, online) — docs/remote-access.md."""

from __future__ import annotations

from typing import Any

from control.commands.base import CommandFamily
from control.ctl import Handler
from control.daemon import Daemon

__all__ = ["PoolListing"]


class PoolListing(CommandFamily):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {"list-pools": self.list_pools}

    def list_pools(self, args: dict[str, Any], uid: int) -> list[dict[str, Any]]:
        return self.daemon.pools.as_list()
