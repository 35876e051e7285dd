"""Road warriors against ``ipsecgw run``: a LAN host behind our gateway, the gateway, and N strongSwan
5.9.8 clients (charon with kernel-libipsec, ``vips = 0.0.0.0``) on one transit bridge.

    lan (10.1.0.2) - gw (10.1.0.1 | 192.0.2.1, bridge) - rw1 (192.0.2.11), rw2 (192.0.2.12), ...

Each client has its own namespace and charon; our gateway answers them all on one ``remote_addrs: %any``
connection with a pool.  Namespace names carry a tag (the caller makes it unique, e.g. from the pid).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.strongswan import Charon, swanctl_conf

GW_IP, LAN_HOST, LAN_GW = "192.0.2.1", "10.1.0.2", "10.1.0.1"
LAN_NET = "10.1.0.0/24"
RW_PSK = "road-warrior-psk-0123456789"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "-n", ns, *args]
    subprocess.run(cmd, check=True, capture_output=True)


def client_ip(i: int) -> str:
    return f"192.0.2.{10 + i}"


def client_id(i: int) -> str:
    return f"rw{i}@example.org"


class RoadWarriors:
    def __init__(self, tag: str, n: int):
        self.lan, self.gw = f"lan{tag}", f"gw{tag}"
        self.clients = [f"rw{i}{tag}" for i in range(1, n + 1)]
        self.names = [self.lan, self.gw, *self.clients]

    def __enter__(self) -> RoadWarriors:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", "lan0", "netns", self.lan, "type", "veth", "peer", "name", "lan1", "netns", self.gw)
        _ip("addr", "add", f"{LAN_HOST}/24", "dev", "lan0", ns=self.lan)
        _ip("addr", "add", f"{LAN_GW}/24", "dev", "lan1", ns=self.gw)
        for dev, ns in (("lan0", self.lan), ("lan1", self.gw)):
            _ip("link", "set", dev, "up", ns=ns)
        _ip("route", "add", "default", "via", LAN_GW, ns=self.lan)
        _ip("link", "add", "br0", "type", "bridge", ns=self.gw)
        _ip("addr", "add", f"{GW_IP}/24", "dev", "br0", ns=self.gw)
        _ip("link", "set", "br0", "up", ns=self.gw)
        for i, ns in enumerate(self.clients, 1):
            _ip("link", "add", f"rw{i}", "netns", ns, "type", "veth", "peer", "name", f"br{i}", "netns", self.gw)
            _ip("addr", "add", f"{client_ip(i)}/24", "dev", f"rw{i}", ns=ns)
            _ip("link", "set", f"rw{i}", "up", ns=ns)
            _ip("link", "set", f"br{i}", "master", "br0", ns=self.gw)
            _ip("link", "set", f"br{i}", "up", ns=self.gw)
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
            subprocess.run(["ip", "netns", "exec", self.gw, "sysctl", "-qw", key], check=True, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def charon(self, i: int) -> Charon:
        """Client i's charon (not started): asks for an IPv4 virtual IP, tunnels the LAN through it."""
        conf = swanctl_conf(local=client_ip(i), remote=GW_IP, local_id=client_id(i), remote_id="gw.example",
                            psk=RW_PSK, ike="aes128gcm16-prfsha256-x25519", esp="aes128gcm16",
                            local_ts="dynamic", remote_ts=LAN_NET, conn_extra="vips = 0.0.0.0")
        # the virtual IP goes on kernel-libipsec's TUN device, with the route to the LAN through it
        return Charon(self.clients[i - 1], conf, charon_extra="install_virtual_ip = yes")

    def ping_from(self, i: int, src: str, count: int = 3) -> subprocess.CompletedProcess:
        """Pings from client i's virtual IP to the LAN host."""
        return subprocess.run(["ip", "netns", "exec", self.clients[i - 1], "ping", "-c", str(count), "-i", "0.2",
                               "-W", "2", "-I", src, LAN_HOST], capture_output=True, text=True, timeout=30)


def gateway_yaml(tmp: Path, pool: str, dns: str = "10.1.0.53") -> tuple[Path, Path]:
    """Our gateway's YAML: one %any connection answering CFG_REQUESTs from pool ``rw``; (config, socket)."""
    shm, sock, cfg = tmp / "rw.shm", tmp / "rw.sock", tmp / "rw.yaml"
    cfg.write_text(f"""\
gateway:
  shm: {{path: {shm}, sa_capacity: 64, policy_capacity: 64, ring_size: 64}}
  control_socket: {sock}
  log_level: debug
  fastpath: {{tun: ipsgrw, tun_addrs: [{LAN_GW}/32], engine: best}}
pools:
  rw: {{addrs: "{pool}", dns: [{dns}]}}
connections:
  rw:
    local_addrs: [{GW_IP}]
    remote_addrs: ["%any"]
    pools: [rw]
    proposals: [aes128gcm16-prfsha256-x25519]
    local: {{auth: psk, id: gw.example}}
    remote: {{auth: psk}}
    children:
      rw:
        local_ts: [{LAN_NET}]
        remote_ts: [dynamic]
        esp_proposals: [aes128gcm16]
secrets:
  ike-rw:
    secret: "{RW_PSK}"
""")
    return cfg, sock
