"""``gateway.metrics``: where the control process serves Prometheus's /metrics (docs/metrics.md).

``listen`` is ``HOST:PORT`` with an IP literal for HOST (``127.0.0.1:9747``, ``[::1]:9747``) or
``localhost``: a name that resolves to several addresses would make the bound one a guess, and the
endpoint is unauthenticated, so where it listens must be exactly what the operator wrote."""

from __future__ import annotations

import ipaddress

from control.config.checker import Checker
from control.config.yaml_tree import Node

__all__ = ["parse_metrics", "parse_listen"]

_METRICS_KEYS = ("listen",)
_EXPECTED = "HOST:PORT with an IP address or localhost and a TCP port from 1 to 65535 (127.0.0.1:9747, [::1]:9747)"


def parse_listen(text: str) -> tuple[str, int] | None:
    """(host, port) from ``HOST:PORT`` / ``[V6]:PORT``; None when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            return (str(ipaddress.IPv6Address(host)), int(port))
        except ValueError:
            return None
    if host == "localhost":
        return (host, int(port))
    try:
        return (str(ipaddress.IPv4Address(host)), int(port))
    except ValueError:
        return None     # an IPv6 address without brackets is refused too: its last group reads as a port


def parse_metrics(ck: Checker, node: Node) -> tuple[str, int] | None:
    m = ck.mapping(node, "gateway.metrics", _METRICS_KEYS)
    if "listen" not in m:
        return None
    text = ck.string(m["listen"], "gateway.metrics.listen")
    if text is None:
        return None
    got = parse_listen(text)
    if got is None:
        ck.error(m["listen"], "gateway.metrics.listen", _EXPECTED, repr(text))
    return got
