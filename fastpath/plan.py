"""What a fastpath process is given to start: its settings (``gateway.fastpath``) and a ``FastpathPlan``.

The fastpath never reads the configuration file or walks connections: control owns both
(control/config/gateway_section.py parses ``gateway.fastpath`` into the dataclasses below; control/fastpath_plan.py
resolves what the fastpath needs from the connections).  The fastpath stays importable, and testable,
without control, and a change to the connection model touches control alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FastpathConfig", "DpdkConfig", "FastpathPlan"]


@dataclass
class FastpathConfig:
    """gateway.fastpath: how ``ipsecgw fastpath`` moves packets (docs/fastpath.md)."""
    io: str = "kernel"              # kernel: TUN + UDP/raw sockets; dpdk: DPDK ports (fastpath/dpdk/daemon.py)
    engine: str = "best"            # an ESP engine name (ipsecgw caps) or best
    tun: str = "ipsecgw0"
    tun_mtu: int = 0                # 0 = outer_mtu minus the largest ESP overhead of the configured proposals
    tun_addrs: list[str] = field(default_factory=list)     # e.g. [10.1.0.1/32]: also the ICMP error source
    outer_mtu: int = 1500
    batch: int = 256                # packets per batch
    hold: int = 64                  # packets held per gateway while an ACQUIRE is answered; 0 = drop them
    offload: bool = True            # TUN TSO/GSO (IFF_VNET_HDR), UDP_SEGMENT and UDP_GRO (docs/fastpath.md)
    clear: str = "tun"              # clear side: tun, or af_packet on clear_interface (docs/fastpath.md)
    clear_interface: str = ""       # the LAN-facing interface with clear: af_packet
    dpdk: DpdkConfig | None = None  # io: dpdk: the DPDK worker's ports and EAL (docs/dpdk.md)


@dataclass
class DpdkConfig:
    """gateway.fastpath.dpdk (io: dpdk): EAL, the two ethdev ports and the worker (docs/dpdk.md)."""
    vdevs: list[str] = field(default_factory=list)       # EAL --vdev values, e.g. net_af_packet0,iface=eth1
    pci: list[str] = field(default_factory=list)         # EAL -a values (PCI devices)
    eal_args: list[str] = field(default_factory=list)    # more EAL arguments, appended as written
    clear_port: str = ""            # ethdev name of the clear (LAN) side
    protected_port: str = ""        # ethdev name of the protected (WAN, ESP) side
    clear_interface: str = ""       # the kernel interface of each port (ARP/ND, IKE, addresses); from iface=
    protected_interface: str = ""
    burst: int = 32
    cores: str = "0"                # EAL -l
    memory_mb: int = 256
    idle_sleep_us: int = 50         # nap after 64 empty polls; 0 = busy poll
    slice_ms: int = 2               # the C loop runs this long between Python's SA syncs


@dataclass(frozen=True)
class FastpathPlan:
    """Everything a fastpath process (kernel or DPDK I/O) reads at start-up, resolved by control.

    A restart needs a new plan: the routes, NAT-T sockets and TUN MTU are set up once, and control moves
    the routes itself on a reload (control/gateway.py)."""
    settings: FastpathConfig
    shm_path: str
    ike_port: int = 500
    natt_port: int = 4500
    # literal local addresses (no %any), sorted: one NAT-T socket each
    local_addrs: tuple[str, ...] = ()
    # literal remote addresses in configuration order: the DPDK worker asks for their MACs first
    peer_addrs: tuple[str, ...] = ()
    # may any connection run over IPv6 (then the AF_INET6 sockets open and the MTU counts a 40-byte header)
    ipv6_outer: bool = False
    # the remote selectors as CIDR prefixes (deduplicated): routed into the TUN, or blackholed
    routes: tuple[str, ...] = ()
    # the TUN's MTU: settings.tun_mtu, or (0 there) the largest inner packet every configured proposal fits
    tun_mtu: int = 0
