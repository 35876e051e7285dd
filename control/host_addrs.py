"""This host's IP addresses, for connections whose local_addrs is %any.

A socket bound to 0.0.0.0 cannot tell which address a datagram reached without IP_PKTINFO, which
asyncio's datagram transports do not pass on; so the daemon binds one socket per local address
instead (what strongSwan's socket plugins do with the kernel's address list), and picks the source
address for an initiation the way the kernel would route it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess


def local_addresses() -> list[str]:
    """Every address configured on this host (``ip -j addr``), IPv6 link-local ones left out (binding
    those needs an interface scope, and IKE peers do not use them)."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True,
                             timeout=10).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found: list[str] = []
    for link in links:
        for a in link.get("addr_info", []):
            text = a.get("local")
            if not text or a.get("family") not in ("inet", "inet6"):
                continue
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.version == 6 and ip.is_link_local:
                continue
            if str(ip) not in found:
                found.append(str(ip))
    return found


def route_source(remote_ip: str, port: int = 500) -> str | None:
    """The source address the kernel would use to reach ``remote_ip`` (None: no route)."""
    family = socket.AF_INET6 if ipaddress.ip_address(remote_ip).version == 6 else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.connect((remote_ip, port))        # a UDP connect sends nothing: it only picks the route
        return str(s.getsockname()[0])
    except OSError:
        return None
    finally:
        s.close()


__all__ = ["local_addresses", "route_source"]
