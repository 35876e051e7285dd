"""``ipsecgw initiate``, ``terminate`` and ``rekey``: a connection or one of its children."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from control.commands.base import CommandFamily, resolve
from control.config import ChildSpec, ConnectionConfig
from control.ctl import CommandError, Handler
from control.daemon import Daemon
from control.initiate_outcome import OutcomeWaiter
from control.sa_records import INSTALLED, IkeEntry

MAX_WAIT = 600      # seconds `initiate --timeout` may wait: bounded, so a forgotten client cannot pin a waiter

__all__ = ["LifecycleCommands"]


class LifecycleCommands(CommandFamily):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {"initiate": self.initiate, "terminate": self.terminate, "rekey": self.rekey}

    def initiate(self, args: dict[str, Any], uid: int) -> str | Awaitable[dict[str, Any]]:
        """Start a negotiation; with ``wait`` (seconds) answer only when it has ended (``Outcome``)."""
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if not conn.can_initiate:
            raise CommandError(f"{conn.name}: remote_addrs is %any, there is nobody to initiate to")
        wait = args.get("wait")
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float)
                                 or not 0 < wait <= MAX_WAIT):
            raise CommandError(f"wait: expected seconds, more than 0 and at most {MAX_WAIT}, got {wait!r}")
        text, entry, children = self._start(conn, spec)
        if wait is None:
            return text
        if entry is None:
            raise CommandError(f"{conn.name}: cannot initiate (the log says why)")
        w = d.outcomes.wait(entry, children)
        if entry.established is not None and all(d.installer is not None and d.installer.child_up(conn.name, c)
                                                 for c in children):
            d.outcomes.forget(w)
            return w.outcome(True).to_dict()
        return self._wait(w, float(wait))

    def _start(self, conn: ConnectionConfig, spec: ChildSpec | None) -> tuple[str, IkeEntry | None, list[str]]:
        """Begin (or join) the negotiation: the answer without waiting, the IKE SA and the children to await."""
        d = self.daemon
        if spec is None:
            first = next((c for c in conn.children if c.start_action == "start"), conn.children[0])
            more = [c for c in conn.children if c is not first and c.start_action != "trap"]
            if (entry := d.ike_sas.connecting(conn.name)) is not None:
                names = [c.name for c in entry.ike.config.children] + [c.name for c in entry.pending]
                return f"{conn.name} is already up or connecting", entry, names
            if (entry := d.ike_sas.up(conn.name)) is not None:
                # up, perhaps without its children (the peer's attempt got its IKE SA but no CHILD SA):
                # the missing ones are negotiated on it
                assert d.installer is not None
                missing = [c for c in [first, *more] if not d.installer.child_up(conn.name, c.name)]
                for c in missing:
                    d.bring_up(conn, c, "operator request")
                return f"{conn.name} is already up or connecting", entry, [c.name for c in missing]
            entry = d.initiate(conn, first, more)
            return f"initiating {conn.name}", entry, [first.name] + [c.name for c in more]
        text = d.bring_up(conn, spec, "operator request")
        return text, d.ike_sas.connecting(conn.name) or d.ike_sas.up(conn.name), [spec.name]

    async def _wait(self, w: OutcomeWaiter, timeout: float) -> dict[str, Any]:
        try:
            outcome = w.already() or await asyncio.wait_for(asyncio.shield(w.future), timeout)
        except TimeoutError:
            outcome = w.timed_out(timeout)
        finally:
            self.daemon.outcomes.forget(w)
        return outcome.to_dict()

    def terminate(self, args: dict[str, Any], uid: int) -> str:
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if spec is None:
            n = d.terminate_conn(conn.name)
            return f"terminated {n} IKE SA(s) of {conn.name}"
        n = d.terminate_child(conn.name, spec.name)
        return f"terminated {n} CHILD SA(s) named {spec.name}"

    def rekey(self, args: dict[str, Any], uid: int) -> str:
        d = self.daemon
        conn, spec = resolve(d.config, args.get("name"))
        if spec is None:
            entries = [e for e in d.ike_sas.of_conn(conn.name) if e.established is not None]
            if not entries:
                raise CommandError(f"{conn.name} has no established IKE SA")
            for e in entries:
                d.rekey_ike(e, "operator request")
            return f"rekeying {len(entries)} IKE SA(s) of {conn.name}"
        kids = [c for c in d.children if (c.conn, c.name) == (conn.name, spec.name) and c.state == INSTALLED]
        if not kids:
            raise CommandError(f"{spec.name} has no installed CHILD SA")
        for c in kids:
            d.rekey_child(c, "operator request")
        return f"rekeying {len(kids)} CHILD SA(s) named {spec.name}"
