"""The service manager's readiness protocol (sd_notify(3)), spoken without libsystemd.

systemd gives a ``Type=notify`` service the path of a unix datagram socket in ``NOTIFY_SOCKET`` (a file,
or an abstract name written with a leading ``@``) and, with ``WatchdogSec=``, the watchdog interval in
``WATCHDOG_USEC`` (for the process ``WATCHDOG_PID`` names, when set).  Each message is one datagram of
``KEY=VALUE`` lines.  Outside systemd the variables are absent and every call does nothing, so the
gateway runs the same either way.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("ipsecgw.supervisor")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None):
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace: a leading NUL byte on the wire
        self.address = ("\0" + path[1:]) if path.startswith("@") else path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        watched = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not watched or watched == str(pid)):
            self.watchdog_interval = int(usec) / 2e6     # half the timeout, as sd_watchdog_enabled(3) advises
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """One datagram of ``lines``; False when there is no socket or the send failed (logged once: a
        service manager that went away must not take the gateway with it)."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %s: %s", self.address.replace("\0", "@"), exc)
                self._warned = True
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC: Type=notify-reload (systemd 253) wants it; older managers ignore it
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                         "STATUS=reloading the configuration")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
