"""What the DPDK gateway worker needs from the kernel beside its ports (io: dpdk).

The CI ports are net_af_packet vdevs on the gateway's own interfaces, so the kernel still receives every
frame.  That is useful: ARP/ND, IKE (control's UDP sockets) and traffic for the gateway's own addresses
stay with the kernel, and the worker frees its copy.  Three things must then not happen, and this module
sees to them:

- the kernel forwarding the clear traffic itself (it would leak plaintext around the tunnel, or let
  plaintext from the protected side in): IPv4 forwarding is switched off on both port interfaces (the
  per-interface switch is what the kernel checks for packets arriving there, and nothing else in the
  namespace changes); IPv6 forwarding has only a global switch, which is switched off when it is on;
  ``Guard.check`` re-asserts both, since writing net.ipv4.ip_forward resets every interface;
- the gateway's own traffic to the remote selectors leaving in the clear by some other route: those
  prefixes are routed to ``blackhole`` while the gateway runs (``Blackholes``); the kernel's copy of a
  forwarded packet, which forwarding being off already drops, meets the same fate;
- the kernel answering ESP with ICMP protocol-unreachable (it has no ESP here): an idle raw ESP socket
  per family counts as the protocol's receiver, and a drop-everything BPF filter keeps it from queueing;
- next-hop MACs: the worker's neighbour table is filled from the kernel's routes and neighbour table
  (``ip -j route get`` / ``ip -j neigh``); a miss makes the kernel resolve (a datagram to the discard
  port of the next hop starts ARP/ND) and is looked up again on the next pass.

Runs between the worker's slices (subprocess calls only on misses and every few seconds), never per packet.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import logging
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ipsecgw.fastpath")

IPPROTO_ESP = 50
SO_ATTACH_FILTER = 26
DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)     # BPF_RET | BPF_K, 0: take nothing
SOLICIT_EVERY = 1.0      # seconds between resolution requests for one address
RECHECK_EVERY = 0.05     # seconds between looks at the kernel's table for an address still missing
REFRESH_EVERY = 5.0      # seconds between re-reads of the known next hops' MACs

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip_json(*args: str) -> list[dict]:
    r = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return []


def local_addresses() -> list[Address]:
    """Every address of this namespace (frames for them are the kernel's)."""
    out = []
    for link in _ip_json("addr", "show"):
        for a in link.get("addr_info", []):
            try:
                out.append(ipaddress.ip_address(a["local"]))
            except (KeyError, ValueError):
                pass
    return out


def interface_address(iface: str, version: int) -> Address | None:
    """The first global address of iface in that IP version (the source of our ICMP errors)."""
    for link in _ip_json("addr", "show", "dev", iface):
        for a in link.get("addr_info", []):
            try:
                ip = ipaddress.ip_address(a["local"])
            except (KeyError, ValueError):
                continue
            if ip.version == version and not ip.is_link_local:
                return ip
    return None


class Guard:
    """Keeps the kernel from forwarding or refusing what the DPDK worker handles (see the module doc)."""

    def __init__(self, ifaces: list[str]):
        self.ifaces = [i for i in ifaces if i]
        self.socks: list[socket.socket] = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                s = socket.socket(fam, socket.SOCK_RAW, IPPROTO_ESP)
            except OSError as exc:
                log.warning("no idle ESP socket (%s): the kernel may answer ESP with ICMP unreachable",
                            exc.strerror)
                continue
            self._buf = ctypes.create_string_buffer(DROP_ALL)
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                         struct.pack("H6xQ", 1, ctypes.addressof(self._buf)))
            self.socks.append(s)
        self.check(first=True)

    def _set(self, path: Path, what: str, first: bool) -> None:
        try:
            if path.read_text().strip() != "0":
                path.write_text("0\n")
                (log.info if first else log.warning)("%s: switched off (the DPDK worker forwards, per policy)",
                                                     what)
        except OSError as exc:
            log.error("cannot switch off %s (%s): the kernel may forward clear traffic itself", what, exc.strerror)

    def check(self, first: bool = False) -> None:
        for i in self.ifaces:
            self._set(Path(f"/proc/sys/net/ipv4/conf/{i}/forwarding"), f"IPv4 forwarding on {i}", first)
        if Path("/proc/sys/net/ipv6/conf/all/forwarding").exists():
            self._set(Path("/proc/sys/net/ipv6/conf/all/forwarding"), "IPv6 forwarding", first)

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []


@dataclass
class Neighbours:
    """Destination -> next-hop MAC, from the kernel; feeds the worker's table through ``set_mac``."""

    ifaces: dict[str, str]                      # port side ("clear", "protected") -> kernel interface
    known: dict[Address, tuple[str, Address]] = field(default_factory=dict)   # dst -> (iface, next hop)
    macs: dict[Address, bytes] = field(default_factory=dict)                 # dst -> MAC set in the worker
    asked: dict[Address, float] = field(default_factory=dict)       # last look at the kernel's table
    solicited: dict[Address, float] = field(default_factory=dict)
    unroutable: dict[Address, float] = field(default_factory=dict)  # dst -> until when not to look again
    next_refresh: float = 0.0

    def snapshot(self) -> dict[tuple[str, Address], bytes]:
        """The kernel's entries on our interfaces: taken before the DPDK ports start, since starting an
        af_packet port flushes the interface's neighbour cache (the PMD cycles the link)."""
        ours = set(self.ifaces.values())
        return {k: v for k, v in self.table().items() if k[0] in ours}

    def restore(self, snap: dict[tuple[str, Address], bytes]) -> dict[Address, bytes]:
        """Put a snapshot back into the kernel (as STALE: it re-confirms them on use) and take its on-link
        entries as known next hops; returns dst -> MAC for the worker."""
        lines = [f"neigh replace {ip} lladdr {mac.hex(':')} dev {dev} nud stale" for (dev, ip), mac in snap.items()]
        if lines:
            subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                           timeout=5)
        for (dev, ip), mac in snap.items():
            self.known[ip] = (dev, ip)
            self.macs[ip] = mac
        return {ip: mac for (_, ip), mac in snap.items()}

    def route(self, dst: Address) -> tuple[str, Address] | None:
        """(interface, next hop) the kernel would use for dst."""
        for r in _ip_json("route", "get", str(dst)):
            dev = r.get("dev", "")
            try:
                nh = ipaddress.ip_address(r.get("gateway") or str(dst))
            except ValueError:
                return None
            return dev, nh
        return None

    @staticmethod
    def table() -> dict[tuple[str, Address], bytes]:
        """The kernel's usable neighbour entries, (interface, address) -> MAC, in one call."""
        out = {}
        for n in _ip_json("neigh", "show"):
            mac = n.get("lladdr")
            if not mac or set(n.get("state", [])) & {"FAILED", "INCOMPLETE"}:
                continue
            try:
                out[(n.get("dev", ""), ipaddress.ip_address(n["dst"]))] = bytes.fromhex(mac.replace(":", ""))
            except (KeyError, ValueError):
                pass
        return out

    @staticmethod
    def solicit(nh: Address) -> None:
        """Make the kernel resolve nh: any datagram towards it starts ARP/ND (discard port, nobody minds)."""
        fam = socket.AF_INET if nh.version == 4 else socket.AF_INET6
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (str(nh), 9))
        except OSError:
            pass

    def resolve(self, dsts: list[Address], now: float) -> dict[Address, bytes]:
        """MACs now known for dsts; for the rest the kernel is asked to resolve (at most once a second
        each) and its table looked at again RECHECK_EVERY seconds later."""
        out: dict[Address, bytes] = {}
        ours = set(self.ifaces.values())
        todo = [d for d in dsts if now - self.asked.get(d, -1e9) >= RECHECK_EVERY]
        if not todo:
            return out
        table = self.table()
        for dst in todo:
            self.asked[dst] = now
            if now < self.unroutable.get(dst, 0.0):
                continue
            rt = self.known.get(dst) or self.route(dst)
            if rt is None or rt[0] not in ours:
                log.debug("no route for %s through a DPDK port", dst)
                self.unroutable[dst] = now + REFRESH_EVERY      # do not ask the kernel again for a while
                continue
            self.known[dst] = rt
            mac = table.get(rt)
            if mac is None:
                if now - self.solicited.get(dst, -1e9) >= SOLICIT_EVERY:
                    log.debug("no MAC for %s (next hop %s on %s) yet: asking the kernel to resolve it", dst,
                              rt[1], rt[0])
                    self.solicited[dst] = now
                    self.solicit(rt[1])
                continue
            self.macs[dst] = out[dst] = mac
        return out

    def refresh(self, now: float) -> dict[Address, bytes]:
        """Known destinations whose next hop's MAC changed (re-read every REFRESH_EVERY seconds)."""
        if now < self.next_refresh:
            return {}
        self.next_refresh = now + REFRESH_EVERY
        # bookkeeping of destinations not seen for a minute goes, so the dicts follow the live set
        self.asked = {d: t for d, t in self.asked.items() if now - t < 60}
        self.solicited = {d: t for d, t in self.solicited.items() if now - t < 60}
        self.unroutable = {d: t for d, t in self.unroutable.items() if t > now}
        table = self.table()
        changed = {}
        for dst, rt in self.known.items():
            mac = table.get(rt)
            if mac is not None and self.macs.get(dst) != mac:
                self.macs[dst] = changed[dst] = mac
        return changed


class Blackholes:
    """Blackhole routes for the remote selectors (see the module doc); kept while control runs, so a
    crashed fastpath leaves protected traffic dropped, never leaked."""

    def __init__(self, nets: list[str]):
        self.routes: list[str] = []
        for net in nets:
            fam = "-6" if ":" in net else "-4"
            r = subprocess.run(["ip", fam, "route", "replace", "blackhole", net], capture_output=True, text=True)
            if r.returncode == 0:
                self.routes.append(net)
            else:
                log.error("ip route replace blackhole %s: %s", net, r.stderr.strip())

    def remove(self) -> None:
        for net in self.routes:
            subprocess.run(["ip", "-6" if ":" in net else "-4", "route", "del", "blackhole", net],
                           capture_output=True)
        self.routes = []

