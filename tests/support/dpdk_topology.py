"""gw A of the shared namespace topology (support.netns_tools.Topology) as a DPDK gateway: its config with
the TUN settings replaced by net_af_packet ports on its veths, and host A's offloads turned off in front of
those ports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from support.netns_tools import gateway_config


def dpdk_config(tmp: Path, *, encap: bool = False, log_level: str = "debug",
                crypto_vdevs: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """gw A's config from the shared topology's, with the TUN settings replaced by the DPDK ports:
    v0b (to host A) is the clear side, v1a (to gw B) the protected side; crypto_vdevs are added to vdevs."""
    cfg, sock, shm = gateway_config(tmp, "A", encap=encap, log_level=log_level)
    vdevs = ", ".join(json.dumps(v) for v in ("net_af_packet0,iface=v0b", "net_af_packet1,iface=v1a", *crypto_vdevs))
    text = re.sub(r"  fastpath: \{.*\}\n", """  fastpath:
    io: dpdk
    dpdk:
      vdevs: [VDEVS]
      clear_port: net_af_packet0
      protected_port: net_af_packet1
      memory_mb: 128
      idle_sleep_us: 100
""".replace("VDEVS", vdevs), cfg.read_text())
    cfg.write_text(text)
    return cfg, sock, shm


def host_offloads_off(ns: str, dev: str) -> None:
    """A veth hands af_packet the sender's unsegmented TSO frames and unfinished checksums (a wire never
    carries those); the DPDK af_packet port has no virtio-net header to learn about them, so the hosts in
    front of it send finished, MTU-sized frames."""
    subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"],
                   check=True, capture_output=True)
