"""The daemon part that serves /metrics: prometheus-client's HTTP server on its own thread, so a scrape
never waits in the IKE loop's queue for longer than one snapshot takes, and the loop never waits on HTTP.

Each scrape asks the loop for a ``Snapshot`` (``call_soon_threadsafe``) and waits for it, bounded: the
daemon's records change only on the loop, so that is the one place a consistent copy can be taken."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import threading
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server

from control.ctl import Handler
from control.daemon import Daemon
from control.fastpath_view import FastpathView
from control.metrics.collector import GatewayCollector
from control.metrics.snapshot import Snapshot, take_snapshot

__all__ = ["MetricsServer", "SNAPSHOT_TIMEOUT", "version"]

log = logging.getLogger("ipsecgw.metrics")

SNAPSHOT_TIMEOUT = 5.0      # seconds a scrape waits for the loop; past it the scrape fails (HTTP 500)


def version() -> str:
    try:
        return metadata.version("ipsecgw")
    except metadata.PackageNotFoundError:
        return "unknown"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class MetricsServer:
    def __init__(self, daemon: Daemon, view: FastpathView, listen: tuple[str, int]):
        self.daemon, self.view, self.listen = daemon, view, listen
        self.version = version()
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GatewayCollector(self.snapshot))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def handlers(self) -> dict[str, Handler]:
        return {}

    def started(self) -> None:
        self._loop = asyncio.get_running_loop()
        host, port = self.listen
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno or errno.EINVAL, f"cannot serve /metrics on {self.where}: "
                          f"{exc.strerror or exc}") from None
        log.info("Prometheus metrics on http://%s/metrics", self.where)

    @property
    def where(self) -> str:
        host, port = self.listen
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0 in tests)."""
        return int(self._httpd.server_address[1]) if self._httpd is not None else self.listen[1]

    def stopping(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def snapshot(self) -> Snapshot:
        """Called on the HTTP thread: the loop takes the snapshot, this thread waits for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the daemon is not running")
        if _running_loop() is loop:         # generate_latest called on the loop itself (tests, a future verb)
            return take_snapshot(self.daemon, self.view, self.version)
        fut: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(take_snapshot(self.daemon, self.view, self.version))
            except Exception as exc:    # noqa: BLE001 - handed to the scrape, which answers 500
                fut.set_exception(exc)

        loop.call_soon_threadsafe(take)
        try:
            return fut.result(timeout=SNAPSHOT_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise
