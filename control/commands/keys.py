"""``ipsecgw export-keys``: the SA keys as Wireshark's decryption tables, for root and only when
``gateway.export_keys`` is on."""

from __future__ import annotations

import logging
from typing import Any

from control.commands.base import CommandFamily
from control.ctl import CommandError, Handler
from control.daemon import Daemon
from control.wireshark_keys import wireshark_tables

__all__ = ["KeyExport"]

log = logging.getLogger("ipsecgw.daemon")


class KeyExport(CommandFamily):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {"export-keys": self.export_keys}

    def export_keys(self, args: dict[str, Any], uid: int) -> dict[str, str]:
        d = self.daemon
        if not d.gw.export_keys:
            raise CommandError("key export is off: set gateway.export_keys: yes in the configuration and restart")
        if uid != 0:
            raise CommandError("key export is for root only")
        fmt = args.get("format", "wireshark")
        if fmt != "wireshark":
            raise CommandError(f"unknown format {fmt!r}: expected wireshark")
        log.warning("SA keys exported over the control socket (uid %d)", uid)
        return wireshark_tables(d.ike_sas, d.children)
