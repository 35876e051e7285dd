"""What a checked configuration is: the dataclasses ``parse_config`` returns, and their views for the
sans-IO IKE core (``ike_config``, ``child_config``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cryptography import x509

from cdefs.sa import Mode
from control.ike.certs import Credentials
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.cp import AddressProvider, IPAddress
from control.ike.message import TrafficSelectorEntry
from control.shm import Capacities
from fastpath.plan import FastpathConfig


@dataclass
class GatewayConfig:
    shm_path: str = "/dev/shm/ipsecgw.shm"
    capacities: Capacities = field(default_factory=Capacities)
    control_socket: str = "/run/ipsecgw/control.sock"
    ike_port: int = 500
    natt_port: int = 4500
    export_keys: bool = False
    log_level: str = "info"
    log_format: str = "text"        # "text" or "json" (one object a line; fastpath/logs.py)
    log_file: str = ""              # `ipsecgw run` logs here (appended) instead of stderr; "" = stderr
    keep_alive: int = 20            # NAT-T keepalive interval behind a NAT, seconds (charon.keep_alive); 0 = off
    window_size: int = 1            # IKE Message ID window (charon.window_size)
    # in front of IKE state (control/responder_gate.py; docs/operator-guide.md "Under attack")
    cookie_threshold: int = 30      # half-open IKE SAs from which IKE_SA_INIT must return a COOKIE (charon's)
    half_open_max: int = 1024       # hard limit: past it new IKE_SA_INIT requests are dropped before any DH
    half_open_per_source: int = 5   # half-open IKE SAs one source may hold: an IPv4 address, an IPv6 /64
    half_open_timeout: int = 30     # seconds a responder IKE SA may stay without IKE_AUTH (charon's)
    fastpath: FastpathConfig = field(default_factory=FastpathConfig)
    metrics_listen: tuple[str, int] | None = None   # gateway.metrics.listen (host, port); None = no /metrics


@dataclass
class ChildSpec:
    name: str
    local_ts: list[TrafficSelectorEntry]
    remote_ts: list[TrafficSelectorEntry]
    local_ts_text: list[str]
    remote_ts_text: list[str]
    esp_proposals: list[str]
    mode: Mode = Mode.TUNNEL
    start_action: str = "none"
    rekey_time: int = 3600          # seconds, 0 = never
    life_time: int = 0              # hard limit; 0 = rekey_time * 1.1 as strongSwan does
    rekey_bytes: int = 0
    life_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    ah_proposals: list[str] = field(default_factory=list)     # set: an AH child (esp_proposals then empty)
    # ``dynamic`` in local_ts/remote_ts (swanctl): the remote side narrows to the peer's virtual IP (or
    # IKE address); the local side, with vips, is whatever address the responder gives us
    local_dynamic: bool = False
    remote_dynamic: bool = False

    @property
    def protocol(self) -> str:
        return "ah" if self.ah_proposals else "esp"

    def child_config(self) -> ChildConfig:
        extra = {}
        if core_schedules_rekeys():
            # the core's CREATE_CHILD_SA task rekeys on its own timer, 0-10 % early (jitter)
            extra = {"rekey_time": float(self.rekey_time), "rand_time": self.rekey_time * 0.1}
        return ChildConfig(self.name, list(self.local_ts), list(self.remote_ts),
                           esp_proposals=",".join(self.esp_proposals) or "aes128gcm16",
                           ah_proposals=",".join(self.ah_proposals), mode=self.mode,
                           remote_dynamic=self.remote_dynamic, **extra)

    @property
    def hard_seconds(self) -> int:
        if self.life_time:
            return self.life_time
        return int(self.rekey_time * 1.1) if self.rekey_time else 0


@dataclass
class ConnectionConfig:
    name: str
    local_addrs: list[str]
    remote_addrs: list[str]             # "%any" allowed: responder only
    local_id: str
    remote_id: str | None
    proposals: list[str]
    children: list[ChildSpec]
    local_auth: str = "psk"
    remote_auth: str = "psk"
    remote_port: int = 500
    remote_natt_port: int = 4500
    encap: bool = False
    dpd_delay: int = 0
    rekey_time: int = 14400
    reauth_time: int = 0                # make-before-break reauthentication; 0 = never (swanctl's default)
    over_time: int | None = None        # None: 10 % of the larger of rekey_time and reauth_time
    rand_time: int | None = None        # None: over_time, at most 10 % of the shorter lifetime
    psk: bytes = field(default=b"", repr=False)     # resolved from secrets; never printed
    credentials: Credentials | None = field(default=None, repr=False)   # auth: pubkey, our cert + key
    cacerts: list[x509.Certificate] = field(default_factory=list, repr=False)
    rsa_pss: bool = False
    fragmentation: str = "yes"          # RFC 7383, as swanctl: yes | accept | force | no
    fragment_size: int = 1280           # IP datagram size of a fragment (charon.fragment_size); 0 = per family
    pools: list[str] = field(default_factory=list)     # responder: CFG_REQUESTs are answered from these
    vips: list[int] = field(default_factory=list)      # initiator: IP versions of the virtual IPs we ask for

    def __repr__(self) -> str:
        return (f"ConnectionConfig({self.name!r}, local={self.local_addrs}, remote={self.remote_addrs}, "
                f"ids={self.local_id!r}/{self.remote_id!r}, children={[c.name for c in self.children]})")

    @property
    def can_initiate(self) -> bool:
        return any(a != "%any" for a in self.remote_addrs)

    @property
    def hard_over_time(self) -> int:
        """swanctl's over_time: how long past its rekey/reauth time an IKE SA may live unreplaced."""
        if self.over_time is not None:
            return self.over_time
        return max(self.rekey_time, self.reauth_time) // 10

    @property
    def jitter(self) -> float:
        """swanctl's rand_time, kept below 10 % of the shorter lifetime so a rekey never comes at once."""
        if self.rand_time is not None:
            return self.rand_time
        times = [t for t in (self.rekey_time, self.reauth_time) if t]
        return min(float(self.hard_over_time), 0.1 * min(times)) if times else 0.0

    @property
    def any_local(self) -> bool:
        """local_addrs is %any (or was left out): IKE on every local address."""
        return "%any" in self.local_addrs

    def ike_config(self, gateway: GatewayConfig, children: list[ChildSpec] | None = None,
                   local_ip: str | None = None, addresses: AddressProvider | None = None) -> IkeConfig:
        """The sans-IO core's view of this connection (our ports from the gateway section).  ``local_ip``:
        the address this IKE SA uses, our identity when none is configured (local_addrs %any).  ``addresses``:
        the daemon's pools, which lease virtual IPs for ``pools``."""
        kids = self.children if children is None else children
        extra = {}
        if core_schedules_rekeys():
            extra = {"rekey_time": float(self.rekey_time), "rand_time": float(self.jitter),
                     "dpd_delay": float(self.dpd_delay), "reauth_time": float(self.reauth_time),
                     "over_time": float(self.hard_over_time), "keep_alive": float(gateway.keep_alive),
                     "window_size": gateway.window_size}
        local_id = self.local_id or local_ip or "0.0.0.0"
        return IkeConfig(Identity.from_string(local_id), self.psk,
                         Identity.from_string(self.remote_id) if self.remote_id else None,
                         ike_proposals=",".join(self.proposals), children=[c.child_config() for c in kids],
                         local_port=gateway.ike_port, local_natt_port=gateway.natt_port,
                         remote_port=self.remote_port, remote_natt_port=self.remote_natt_port,
                         encap=self.encap, local_auth=self.local_auth, remote_auth=self.remote_auth,
                         credentials=self.credentials, cacerts=list(self.cacerts), rsa_pss=self.rsa_pss,
                         fragmentation=self.fragmentation, fragment_size=self.fragment_size,
                         half_open_timeout=float(gateway.half_open_timeout),
                         pools=tuple(self.pools), addresses=addresses if self.pools else None,
                         vips=tuple(self.vips), **extra)


@dataclass
class PoolSpec:
    """One entry of ``pools:`` (control/pools.py makes the runtime pool of it)."""

    name: str
    addrs: str
    version: int
    dns: list[IPAddress] = field(default_factory=list)


@dataclass
class SecretEntry:
    name: str
    ids: list[str]
    secret: bytes = field(repr=False)


@dataclass
class Config:
    file: str
    gateway: GatewayConfig
    connections: dict[str, ConnectionConfig]
    secrets: list[SecretEntry] = field(repr=False)
    pools: dict[str, PoolSpec] = field(default_factory=dict)

    def child(self, name: str) -> tuple[ConnectionConfig, ChildSpec] | None:
        for conn in self.connections.values():
            for c in conn.children:
                if c.name == name:
                    return conn, c
        return None


def core_schedules_rekeys() -> bool:
    """Whether the IKE core keeps rekey/DPD timers itself (its configs carry rekey_time and dpd_delay)."""
    return {"rekey_time", "rand_time"} <= {f.name for f in dataclasses.fields(ChildConfig)} and \
        {"rekey_time", "dpd_delay"} <= {f.name for f in dataclasses.fields(IkeConfig)}
