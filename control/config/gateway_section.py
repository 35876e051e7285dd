"""The ``gateway:`` section: shared memory, control socket, IKE ports, logging, ``metrics`` and ``fastpath``
(with its ``dpdk`` part), into ``GatewayConfig`` and fastpath/plan.py's dataclasses."""

from __future__ import annotations

import ipaddress
import re

from control.config.checker import Checker
from control.config.metrics_section import parse_metrics
from control.config.model import GatewayConfig
from control.config.yaml_tree import Node
from control.shm import Capacities
from fastpath.plan import DpdkConfig, FastpathConfig

_GATEWAY_KEYS = ("shm", "control_socket", "ike_port", "natt_port", "export_keys", "log_level", "log_format",
                 "log_file",
                 "fastpath", "keep_alive", "window_size", "cookie_threshold", "half_open_max", "half_open_per_source",
                 "half_open_timeout", "metrics")
_FASTPATH_KEYS = ("io", "engine", "tun", "tun_mtu", "tun_addrs", "outer_mtu", "batch", "hold", "offload", "clear",
                  "clear_interface", "dpdk")
_CLEAR_MODES = ("tun", "af_packet")
_IO_MODES = ("kernel", "dpdk")
_DPDK_KEYS = ("vdevs", "pci", "eal_args", "clear_port", "protected_port", "clear_interface", "protected_interface",
               "burst", "cores", "memory_mb", "idle_sleep_us", "slice_ms")
_SHM_KEYS = ("path", "sa_capacity", "policy_capacity", "ring_size")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")


def parse_gateway(ck: Checker, node: Node | None) -> GatewayConfig:
    g = GatewayConfig()
    if node is None:
        return g
    m = ck.mapping(node, "gateway", _GATEWAY_KEYS)
    if "shm" in m:
        s = ck.mapping(m["shm"], "gateway.shm", _SHM_KEYS)
        if "path" in s:
            g.shm_path = ck.string(s["path"], "gateway.shm.path") or g.shm_path
        caps = {}
        for key, attr, hi in (("sa_capacity", "n_sa", 1 << 24), ("policy_capacity", "n_spd", 1 << 20)):
            if key in s:
                n = ck.integer(s[key], f"gateway.shm.{key}", 2, hi, f"an integer from 2 to {hi}")
                if n is not None:
                    caps[attr] = n
        if "ring_size" in s:
            n = ck.integer(s["ring_size"], "gateway.shm.ring_size", 16, 1 << 20, "a power of two from 16 to 1048576")
            if n is not None and n & (n - 1):
                ck.error(s["ring_size"], "gateway.shm.ring_size", "a power of two from 16 to 1048576", str(n))
            elif n is not None:
                caps["cmd_ring"] = caps["evt_ring"] = n
        g.capacities = Capacities(**caps)
    if "control_socket" in m:
        g.control_socket = ck.string(m["control_socket"], "gateway.control_socket") or g.control_socket
    for key in ("ike_port", "natt_port"):
        if key in m:
            p = ck.integer(m[key], f"gateway.{key}", 1, 65535, "a UDP port from 1 to 65535")
            if p is not None:
                setattr(g, key, p)
    if g.ike_port == g.natt_port and "natt_port" in m:
        ck.error(m["natt_port"], "gateway.natt_port", "a port other than ike_port", str(g.natt_port))
    if "export_keys" in m:
        b = ck.boolean(m["export_keys"], "gateway.export_keys")
        g.export_keys = bool(b)
    if "log_level" in m:
        lv = ck.choice(m["log_level"], "gateway.log_level", _LOG_LEVELS, lower=True)
        if lv is not None:
            g.log_level = lv
    if "log_format" in m:
        lf = ck.choice(m["log_format"], "gateway.log_format", _LOG_FORMATS, lower=True)
        if lf is not None:
            g.log_format = lf
    if "log_file" in m:
        g.log_file = ck.string(m["log_file"], "gateway.log_file") or ""
    if "fastpath" in m:
        g.fastpath = _fastpath(ck, m["fastpath"])
    if "keep_alive" in m:
        d = ck.duration(m["keep_alive"], "gateway.keep_alive")
        if d is not None:
            g.keep_alive = d
    if "window_size" in m:
        n = ck.integer(m["window_size"], "gateway.window_size", 1, 64, "an integer from 1 to 64")
        if n is not None:
            g.window_size = n
    if "metrics" in m:
        g.metrics_listen = parse_metrics(ck, m["metrics"])
    _limits(ck, m, g)
    return g


def _limits(ck: Checker, m: dict[str, Node], g: GatewayConfig) -> None:
    """cookie_threshold, half_open_max, half_open_per_source, half_open_timeout: the responder gate's."""
    for key, lo, hi, what in (("half_open_max", 1, 1 << 20, "an integer from 1 to 1048576"),
                              ("cookie_threshold", 0, 1 << 20, "an integer from 0 (always) to half_open_max"),
                              ("half_open_per_source", 1, 1 << 20, "an integer from 1 to half_open_max")):
        if key in m:
            n = ck.integer(m[key], f"gateway.{key}", lo, hi, what)
            if n is not None:
                setattr(g, key, n)
    for key, what in (("cookie_threshold", "an integer from 0 (always) to half_open_max"),
                      ("half_open_per_source", "an integer from 1 to half_open_max")):
        if key in m and getattr(g, key) > g.half_open_max:
            ck.error(m[key], f"gateway.{key}", f"{what} ({g.half_open_max})", str(getattr(g, key)))
    if "half_open_timeout" in m:
        d = ck.duration(m["half_open_timeout"], "gateway.half_open_timeout")
        if d is not None and not 1 <= d <= 3600:
            ck.error(m["half_open_timeout"], "gateway.half_open_timeout", "a duration from 1s to 1h", f"{d}s")
        elif d is not None:
            g.half_open_timeout = d


def _fastpath(ck: Checker, node: Node) -> FastpathConfig:
    f = FastpathConfig()
    m = ck.mapping(node, "gateway.fastpath", _FASTPATH_KEYS)
    if "io" in m:
        io = ck.choice(m["io"], "gateway.fastpath.io", _IO_MODES)
        if io is not None:
            f.io = io
    if "engine" in m:
        from fastpath.engines import known_names

        e = ck.choice(m["engine"], "gateway.fastpath.engine", ["best", *known_names()])
        if e is not None:
            f.engine = e
    if "tun" in m:
        t = ck.ifname(m["tun"], "gateway.fastpath.tun")
        if t is not None:
            f.tun = t
    for key, lo, hi, what in (("tun_mtu", 0, 65535, "0 (auto) or an MTU from 576 to 65535"),
                              ("outer_mtu", 576, 65535, "an MTU from 576 to 65535"),
                              ("batch", 1, 4096, "an integer from 1 to 4096"),
                              ("hold", 0, 4096, "an integer from 0 to 4096")):
        if key in m:
            n = ck.integer(m[key], f"gateway.fastpath.{key}", lo, hi, what)
            if n is not None and key == "tun_mtu" and 0 < n < 576:
                ck.error(m[key], "gateway.fastpath.tun_mtu", what, str(n))
            elif n is not None:
                setattr(f, key, n)
    if "offload" in m:
        o = ck.boolean(m["offload"], "gateway.fastpath.offload")
        if o is not None:
            f.offload = o
    if "tun_addrs" in m:
        for a, item, path in ck.str_list(m["tun_addrs"], "gateway.fastpath.tun_addrs"):
            try:
                ipaddress.ip_interface(a)
            except ValueError:
                ck.error(item, path, "an address with an optional prefix length (10.1.0.1/32)", repr(a))
            else:
                f.tun_addrs.append(a)
    _fastpath_clear(ck, node, m, f)
    _fastpath_dpdk(ck, node, m, f)
    return f


def _fastpath_clear(ck: Checker, node: Node, m: dict[str, Node], f: FastpathConfig) -> None:
    """clear: tun | af_packet, and clear_interface, which af_packet needs and tun refuses (as it refuses the
    TUN keys with af_packet: a setting that would be silently ignored is a mistake worth naming)."""
    if "clear" in m:
        c = ck.choice(m["clear"], "gateway.fastpath.clear", _CLEAR_MODES)
        if c is not None:
            f.clear = c
    if "clear_interface" in m:
        i = ck.ifname(m["clear_interface"], "gateway.fastpath.clear_interface")
        if i is not None and f.clear != "af_packet":
            ck.error(m["clear_interface"], "gateway.fastpath.clear_interface", "no clear_interface unless "
                     "clear is af_packet", repr(i))
        elif i is not None:
            f.clear_interface = i
    if f.clear == "af_packet":
        if f.io != "kernel":
            ck.error(m.get("clear", node), "gateway.fastpath.clear", "tun (af_packet is a clear side of io: "
                     "kernel)", f"af_packet with io: {f.io}")
        if "clear_interface" not in m:
            ck.error(m.get("clear", node), "gateway.fastpath.clear_interface", "the LAN-facing interface name "
                     "with clear: af_packet", "nothing")
        for key in ("tun", "tun_mtu", "tun_addrs"):
            if key in m:
                ck.error(m[key], f"gateway.fastpath.{key}", "no TUN setting with clear: af_packet (the "
                         "interface's own MTU and addresses are used)", key)


def _vdev_iface(vdev: str) -> str:
    """The kernel interface an af_packet or tap vdev sits on (its iface= argument), or ""."""
    name, _, args = vdev.partition(",")
    if not name.startswith(("net_af_packet", "net_tap")):
        return ""
    for kv in args.split(","):
        k, _, v = kv.partition("=")
        if k.strip() == "iface":
            return v.strip()
    return ""


def _fastpath_dpdk(ck: Checker, node: Node, m: dict[str, Node], f: FastpathConfig) -> None:
    """io: dpdk and its dpdk: section (refused with io: kernel, required with io: dpdk)."""
    base = "gateway.fastpath.dpdk"
    if f.io != "dpdk":
        if "dpdk" in m:
            ck.error(m["dpdk"], base, "no dpdk section unless io is dpdk", "a dpdk section")
        return
    if "dpdk" not in m:
        ck.error(m.get("io", node), base, "a dpdk section (vdevs, clear_port, protected_port) with io: dpdk",
                 "nothing")
        return
    for key in ("tun", "tun_mtu", "tun_addrs", "clear", "clear_interface"):
        if key in m:
            ck.error(m[key], f"gateway.fastpath.{key}", "no TUN or clear-side setting with io: dpdk (the DPDK "
                     "ports replace them)", key)
    if f.engine != "best":
        ck.error(m["engine"], "gateway.fastpath.engine", "best with io: dpdk (the DPDK worker runs its own ESP "
                 "core)", repr(f.engine))
    d = DpdkConfig()
    s = ck.mapping(m["dpdk"], base, _DPDK_KEYS)
    for key in ("vdevs", "pci", "eal_args"):
        if key in s:
            for v, item, path in ck.str_list(s[key], f"{base}.{key}"):
                if key == "vdevs" and "=" in v.partition(",")[0]:
                    ck.error(item, path, "a device name with its arguments (net_af_packet0,iface=eth1); inside "
                             "[...] quote entries that contain commas", repr(v))
                getattr(d, key).append(v)
    names = [v.partition(",")[0].strip() for v in d.vdevs] + d.pci
    for key in ("clear_port", "protected_port"):
        if key not in s:
            ck.error(m["dpdk"], f"{base}.{key}", "the ethdev name of the " + key.split("_")[0] + " side (a vdev "
                     "name such as net_af_packet0, or a PCI address from pci)", "nothing")
            continue
        v = ck.string(s[key], f"{base}.{key}")
        if v is not None and v not in names:
            ck.error(s[key], f"{base}.{key}", "one of the devices in vdevs or pci (" + (", ".join(names) or "none")
                     + ")", repr(v))
        elif v is not None:
            setattr(d, key, v)
    if d.clear_port and d.clear_port == d.protected_port:
        ck.error(s["protected_port"], f"{base}.protected_port", "a port other than clear_port", repr(d.clear_port))
    for side in ("clear", "protected"):
        key = f"{side}_interface"
        if key in s:
            i = ck.ifname(s[key], f"{base}.{key}")
            if i is not None:
                setattr(d, key, i)
            continue
        port = getattr(d, f"{side}_port")
        iface = next((_vdev_iface(v) for v in d.vdevs if v.partition(",")[0].strip() == port), "")
        if port and not iface:
            ck.error(s.get(f"{side}_port", m["dpdk"]), f"{base}.{key}", "the kernel interface of the " + side
                     + " port (given, or the iface= of a net_af_packet/net_tap vdev): the kernel answers ARP/ND "
                     "and IKE on it", "nothing")
        setattr(d, key, iface)
    for key, lo, hi, what in (("burst", 1, 256, "an integer from 1 to 256"),
                              ("memory_mb", 64, 1 << 20, "megabytes from 64"),
                              ("idle_sleep_us", 0, 100000, "microseconds from 0 (busy poll) to 100000"),
                              ("slice_ms", 1, 100, "milliseconds from 1 to 100")):
        if key in s:
            n = ck.integer(s[key], f"{base}.{key}", lo, hi, what)
            if n is not None:
                setattr(d, key, n)
    if "cores" in s:
        c = ck.string(s["cores"], f"{base}.cores")
        if c is not None and not re.fullmatch(r"[0-9]+([-,][0-9]+)*", c):
            ck.error(s["cores"], f"{base}.cores", "an EAL core list (0, 2-3, 1,3)", repr(c))
        elif c is not None:
            d.cores = c
    f.dpdk = d
