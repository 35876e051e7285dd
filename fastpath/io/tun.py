"""The clear-side TUN device: create (or re-open) it, set MTU and addresses, route remote selectors to it.

The device is made persistent: if the fastpath dies, the device and its routes stay, so traffic for the
remote selectors queues in (and overflows from) the TUN instead of leaking out in the clear through the
default route; a restarted fastpath opens the same device again.  ``close(remove=True)`` deletes it.
Configuration goes through iproute2 (``ip``), once at start-up: nothing here is on the packet path.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import struct
import subprocess
from collections.abc import Iterable

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
VNET_HDR_LEN = 10        # struct virtio_net_hdr
IFNAMSIZ = 16


class TunError(RuntimeError):
    """The TUN device cannot be created or configured; the message says which step failed."""


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise TunError(f"ip {' '.join(args)}: {r.stderr.strip() or 'failed'}")


class Tun:
    """An open TUN device (IFF_TUN | IFF_NO_PI: each read or write is one IP packet).

    With ``vnet`` (IFF_VNET_HDR and TUNSETOFFLOAD CSUM | TSO4 | TSO6) every read and write starts with a
    10-byte struct virtio_net_hdr, and a read may return a TCP super-segment of up to 64 KiB: the kernel
    skips segmenting (and checksumming) what the fastpath would otherwise read one packet per syscall.
    """

    def __init__(self, name: str, mtu: int, addresses: Iterable[str] = (), routes: Iterable[str] = (),
                 persist: bool = True, vnet: bool = False):
        if not name or len(name.encode()) >= IFNAMSIZ:
            raise TunError(f"TUN name {name!r}: expected 1 to {IFNAMSIZ - 1} characters")
        self.name = name
        self.mtu = mtu
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(f"cannot open /dev/net/tun: {exc.strerror}") from None
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0))
            fcntl.ioctl(self.fd, TUNSETIFF, ifr)
            self.vnet = vnet
            if vnet:
                fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            else:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)     # a re-opened device may still offer them
            if persist:
                fcntl.ioctl(self.fd, TUNSETPERSIST, 1)
            _ip("link", "set", "dev", name, "mtu", str(mtu), "up")
            for a in addresses:
                iface = ipaddress.ip_interface(a)
                _ip("addr", "replace", str(iface), "dev", name)
            self.routes = []
            for r in routes:
                net = ipaddress.ip_network(r, strict=False)
                _ip("-6" if net.version == 6 else "-4", "route", "replace", str(net), "dev", name)
                self.routes.append(str(net))
        except OSError as exc:
            os.close(self.fd)
            raise TunError(f"cannot create TUN device {name}: {exc.strerror}") from None
        except TunError:
            os.close(self.fd)
            raise

    def fileno(self) -> int:
        return self.fd

    def close(self, remove: bool = False) -> None:
        """Close the device; ``remove`` also deletes a persistent one (and with it its routes)."""
        if self.fd < 0:
            return
        if remove:
            try:
                fcntl.ioctl(self.fd, TUNSETPERSIST, 0)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1


def remote_routes(prefixes: Iterable[str]) -> list[str]:
    """The networks to route into the TUN: the remote traffic selectors, as CIDR prefixes (deduplicated)."""
    out: list[str] = []
    for p in prefixes:
        net = str(ipaddress.ip_network(p, strict=False))
        if net not in out:
            out.append(net)
    return out
