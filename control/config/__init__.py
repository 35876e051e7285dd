"""The gateway's YAML configuration, shaped like strongSwan's swanctl.conf.

``load_config(path)`` returns a ``Config`` or raises one ``ConfigError`` that
lists every problem found.  Each problem names the file, the line, the path to
the field (``connections.site-b.children.net.esp_proposals[0]``) and what was
expected.  Unknown keys are errors, not silently ignored.  Secrets never appear
in a message or a repr: a bad secret is described by its shape only.

Layout (see examples/ and docs/daemon.md)::

    gateway:      shm {path, sa_capacity, policy_capacity, ring_size}, control_socket,
                  ike_port, natt_port, export_keys, log_level, keep_alive, window_size,
                  fastpath {io, engine, clear, clear_interface, tun, tun_mtu, tun_addrs, outer_mtu, batch,
                            hold, offload}
    connections:  NAME: local_addrs (or %any), remote_addrs, remote_port, remote_natt_port, proposals,
                  encap, dpd_delay, rekey_time, reauth_time, over_time, rand_time, fragmentation, fragment_size,
                  local {auth, id, certs}, remote {auth, id, cacerts},
                  children: NAME: local_ts, remote_ts, esp_proposals, mode, start_action,
                            rekey_time, life_time, rekey_bytes, life_bytes, rekey_packets, life_packets
    secrets:      ike-NAME: {id: [..], secret: ..}
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from cdefs.sa import Mode
from control.ike.certs import CertError, Credentials, dn_to_string, load_cert, load_key
from control.ike.config import ChildConfig, Identity, IkeConfig
from control.ike.message import TrafficSelectorEntry
from control.ike.proposals import ProposalError, parse_proposals
from control.shm import Capacities
from fastpath.plan import DpdkConfig, FastpathConfig

__all__ = ["ConfigError", "Config", "GatewayConfig", "ConnectionConfig", "ChildSpec", "SecretEntry",
           "load_config", "parse_config", "parse_duration"]

START_ACTIONS = ("none", "trap", "start")
_PROTO_NAMES = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "gre": 47}
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` holds one operator-ready line per mistake."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# -- YAML with line numbers ------------------------------------------------------------

class _Node:
    """A parsed YAML value with the line it starts on (1-based)."""

    __slots__ = ("value", "line")

    def __init__(self, value: Any, line: int):
        self.value, self.line = value, line


def _compose(text: str, file: str) -> _Node | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from None
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    dupes: list[str] = []

    def walk(node: yaml.Node) -> _Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, _Node] = {}
            keys: dict[str, int] = {}
            for k, v in node.value:
                key = str(loader.construct_object(k, deep=True))
                if key in keys:
                    dupes.append(f"{file}:{k.start_mark.line + 1}: key {key!r} appears twice "
                                 f"(first on line {keys[key]})")
                keys[key] = k.start_mark.line + 1
                out[key] = walk(v)
            return _Node(out, line)
        if isinstance(node, yaml.SequenceNode):
            return _Node([walk(v) for v in node.value], line)
        if node.tag == "tag:yaml.org,2002:int" or node.tag == "tag:yaml.org,2002:float":
            # YAML 1.1 reads 0x.., 0o.., 1:30 and 1_000 as numbers; keep the operator's text for
            # fields (like secrets) that must be read as written.
            return _Node(_Num(loader.construct_object(node), node.value), line)
        return _Node(loader.construct_object(node, deep=True), line)

    tree = walk(root)
    if dupes:
        raise ConfigError(dupes)
    return tree


class _Num:
    __slots__ = ("number", "text")

    def __init__(self, number: Any, text: str):
        self.number, self.text = number, text


# -- result model --------------------------------------------------------------------------

@dataclass
class GatewayConfig:
    shm_path: str = "/dev/shm/ipsecgw.shm"
    capacities: Capacities = field(default_factory=Capacities)
    control_socket: str = "/run/ipsecgw/control.sock"
    ike_port: int = 500
    natt_port: int = 4500
    export_keys: bool = False
    log_level: str = "info"
    log_file: str = ""              # `ipsecgw run` logs here (appended) instead of stderr; "" = stderr
    keep_alive: int = 20            # NAT-T keepalive interval behind a NAT, seconds (charon.keep_alive); 0 = off
    window_size: int = 1            # IKE Message ID window (charon.window_size)
    fastpath: FastpathConfig = field(default_factory=FastpathConfig)


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

    def child_config(self) -> ChildConfig:
        extra = {}
        if core_schedules_rekeys():
            # the core's CREATE_CHILD_SA task rekeys on its own timer, 0-10 % early (jitter)
            extra = {"rekey_time": float(self.rekey_time), "rand_time": self.rekey_time * 0.1}
        return ChildConfig(self.name, list(self.local_ts), list(self.remote_ts),
                           esp_proposals=",".join(self.esp_proposals), mode=self.mode, **extra)

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
                   local_ip: str | None = None) -> IkeConfig:
        """The sans-IO core's view of this connection (our ports from the gateway section).  ``local_ip``:
        the address this IKE SA uses, our identity when none is configured (local_addrs %any)."""
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
                         fragmentation=self.fragmentation, fragment_size=self.fragment_size, **extra)


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


# -- checker --------------------------------------------------------------------------------

_MISSING = object()


class _Checker:
    """Walks the tree, converting fields; every problem is recorded, none stops the walk."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[str] = []

    def error(self, node: _Node | None, path: str, expected: str, got: str | None = None,
              line: int | None = None) -> None:
        ln = line if line is not None else (node.line if node is not None else None)
        where = f"{self.file}:{ln}" if ln else self.file
        text = f"{where}: {path}: expected {expected}"
        if got is not None:
            text += f", got {got}"
        self.problems.append(text)

    def mapping(self, node: _Node, path: str, allowed: tuple[str, ...] | None) -> dict[str, _Node]:
        if not isinstance(node.value, dict):
            self.error(node, path, "a mapping (key: value lines)", _describe(node.value))
            return {}
        if allowed is not None:
            for k, v in node.value.items():
                if k not in allowed:
                    self.error(v, f"{path}.{k}" if path else k, "one of the known keys: " + ", ".join(allowed),
                               "an unknown key")
        return node.value

    def string(self, node: _Node, path: str) -> str | None:
        v = node.value
        if isinstance(v, _Num):
            return v.text
        if isinstance(v, str) and v.strip():
            return v.strip()
        self.error(node, path, "a non-empty string", _describe(v))
        return None

    def str_list(self, node: _Node, path: str, comma: bool = False) -> list[tuple[str, _Node, str]]:
        """A string or a list of strings as (value, node, path of the item)."""
        if isinstance(node.value, list):
            out = []
            for i, item in enumerate(node.value):
                s = self.string(item, f"{path}[{i}]")
                if s is not None:
                    out.append((s, item, f"{path}[{i}]"))
            if not node.value:
                self.error(node, path, "at least one entry", "an empty list")
            return out
        s = self.string(node, path)
        if s is None:
            return []
        if comma:
            return [(p.strip(), node, path) for p in s.split(",") if p.strip()]
        return [(s, node, path)]

    def integer(self, node: _Node, path: str, lo: int, hi: int, what: str) -> int | None:
        v = node.value
        n = v.number if isinstance(v, _Num) else v
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
            self.error(node, path, what, _describe(v))
            return None
        return n

    def choice(self, node: _Node, path: str, choices: tuple[str, ...] | list[str], expected: str | None = None,
               lower: bool = False) -> str | None:
        """A string among choices (lower: compared and returned lower-cased); expected says what fits when it
        is not (default: "one of" the choices)."""
        s = self.string(node, path)
        if s is None:
            return None
        v = s.lower() if lower else s
        if v not in choices:
            self.error(node, path, expected or "one of " + ", ".join(choices), repr(s))
            return None
        return v

    def ifname(self, node: _Node, path: str) -> str | None:
        """A network interface name as the kernel takes it (IFNAMSIZ: at most 15 bytes, no '/' or space)."""
        s = self.string(node, path)
        if s is not None and (len(s.encode()) > 15 or "/" in s or " " in s):
            self.error(node, path, "an interface name of 1 to 15 characters", repr(s))
            return None
        return s

    def boolean(self, node: _Node, path: str) -> bool | None:
        if isinstance(node.value, bool):
            return node.value
        if isinstance(node.value, str) and node.value.lower() in ("yes", "no"):
            return node.value.lower() == "yes"
        self.error(node, path, "yes/no (true/false)", _describe(node.value))
        return None

    def duration(self, node: _Node, path: str) -> int | None:
        v = node.value
        text = v.text if isinstance(v, _Num) else (str(v) if isinstance(v, str) else None)
        secs = parse_duration(text) if text is not None else None
        if secs is None:
            self.error(node, path, "a duration: seconds, or a number with s, m, h or d (30s, 1h, 1d)",
                       _describe(v))
        return secs

    def size(self, node: _Node, path: str) -> int | None:
        v = node.value
        text = v.text if isinstance(v, _Num) else (str(v) if isinstance(v, str) else None)
        m = _SIZE.match(text.strip()) if text is not None else None
        if m is None:
            self.error(node, path, "a count: a number, optionally with k, M or G (500M)", _describe(v))
            return None
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _describe(v: Any) -> str:
    if isinstance(v, _Num):
        return repr(v.text)
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing"
    return repr(v)


def parse_duration(text: str) -> int | None:
    """strongSwan's time spelling: ``90``, ``90s``, ``10m``, ``4h``, ``1d`` -> seconds, or None."""
    m = _DURATION.match(text.strip())
    return int(m.group(1)) * _UNITS[m.group(2)] if m else None


def _parse_ts(text: str) -> TrafficSelectorEntry:
    """``10.1.0.0/16``, ``10.1.0.5``, ``10.1.0.0/16[tcp/443]``, ``0.0.0.0/0[udp/5000-5100]``, ``dynamic`` excluded."""
    m = re.match(r"^([^\[\]]+?)\s*(?:\[([^\]]*)\])?$", text)
    if not m:
        raise ValueError("unbalanced [...]")
    net = ipaddress.ip_network(m.group(1), strict=True)
    proto, lo, hi = 0, 0, 65535
    if m.group(2):
        proto_s, _, port_s = m.group(2).partition("/")
        proto_s = proto_s.strip().lower()
        if proto_s in ("", "any", "%any"):
            proto = 0
        elif proto_s in _PROTO_NAMES:
            proto = _PROTO_NAMES[proto_s]
        elif proto_s.isdigit() and int(proto_s) <= 255:
            proto = int(proto_s)
        else:
            raise ValueError(f"unknown protocol {proto_s!r}")
        port_s = port_s.strip()
        if port_s and port_s not in ("%any", "any"):
            a, _, b = port_s.partition("-")
            lo, hi = int(a), int(b or a)
            if not 0 <= lo <= hi <= 65535:
                raise ValueError(f"port range {port_s} is not within 0-65535")
            if proto not in (6, 17, 132):
                raise ValueError("ports need tcp, udp or sctp")
    return TrafficSelectorEntry(net[0], net[-1], proto, lo, hi)


def _parse_secret(node: _Node) -> bytes | None:
    """swanctl spellings: plain text, ``0x`` hex, ``0s`` base64."""
    v = node.value
    text = v.text if isinstance(v, _Num) else v
    if not isinstance(text, str) or not text:
        return None
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            return None
    if text.startswith("0s"):
        try:
            return base64.b64decode(text[2:], validate=True)
        except (binascii.Error, ValueError):
            return None
    return text.encode()


# -- sections -------------------------------------------------------------------------------

_GATEWAY_KEYS = ("shm", "control_socket", "ike_port", "natt_port", "export_keys", "log_level", "log_file",
                 "fastpath", "keep_alive", "window_size")
_FASTPATH_KEYS = ("io", "engine", "tun", "tun_mtu", "tun_addrs", "outer_mtu", "batch", "hold", "offload", "clear",
                  "clear_interface", "dpdk")
_CLEAR_MODES = ("tun", "af_packet")
_IO_MODES = ("kernel", "dpdk")
_DPDK_KEYS = ("vdevs", "pci", "eal_args", "clear_port", "protected_port", "clear_interface", "protected_interface",
               "burst", "cores", "memory_mb", "idle_sleep_us", "slice_ms")
_SHM_KEYS = ("path", "sa_capacity", "policy_capacity", "ring_size")
_CONN_KEYS = ("local_addrs", "remote_addrs", "remote_port", "remote_natt_port", "proposals", "encap", "dpd_delay",
              "rekey_time", "reauth_time", "over_time", "rand_time", "local", "remote", "children", "version", "mobike",
              "fragmentation", "fragment_size")
_AUTH_KEYS = ("auth", "id", "certs", "cacerts", "pubkeys", "key", "rsa_pss")
_CHILD_KEYS = ("local_ts", "remote_ts", "esp_proposals", "mode", "start_action", "rekey_time", "life_time",
               "rekey_bytes", "life_bytes", "rekey_packets", "life_packets", "dpd_action")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _gateway(ck: _Checker, node: _Node | None) -> GatewayConfig:
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
    return g


def _fastpath(ck: _Checker, node: _Node) -> FastpathConfig:
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


def _fastpath_clear(ck: _Checker, node: _Node, m: dict[str, _Node], f: FastpathConfig) -> None:
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


def _fastpath_dpdk(ck: _Checker, node: _Node, m: dict[str, _Node], f: FastpathConfig) -> None:
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


def _addrs(ck: _Checker, node: _Node, path: str, allow_any: bool) -> list[str]:
    out = []
    for text, item, p in ck.str_list(node, path, comma=True):
        if allow_any and text in ("%any", "%any4", "%any6"):
            out.append("%any")
            continue
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            ck.error(item, p, "an IP address" + (" or %any" if allow_any else "")
                     + " (host names are not resolved)", repr(text))
    return out


def _identity(ck: _Checker, node: _Node, path: str) -> str | None:
    text = ck.string(node, path)
    if text is None:
        return None
    try:
        Identity.from_string(text)
    except ValueError as exc:
        ck.error(node, path, "an IP address, an FQDN (@host.example), an email-style ID (user@host) or a DN "
                 "(C=CH, O=example, CN=gw-a)", str(exc))
        return None
    return text


def _auth(ck: _Checker, node: _Node | None, path: str, required_id: bool) -> tuple[str, str | None]:
    if node is None:
        if required_id:
            ck.error(None, path, "a section with auth and id", "nothing")
        return "psk", None
    m = ck.mapping(node, path, _AUTH_KEYS)
    method = "psk"
    if "auth" in m:
        method = (ck.string(m["auth"], f"{path}.auth") or "psk").lower()
        if method not in ("psk", "pubkey"):
            ck.error(m["auth"], f"{path}.auth", "psk or pubkey", repr(method))
    ident = None
    if "id" in m:
        ident = _identity(ck, m["id"], f"{path}.id")
    elif required_id:
        ck.error(node, f"{path}.id", "our identity (an IP address, @fqdn or user@host)", "nothing")
    for key in ("certs", "cacerts", "pubkeys"):
        if key in m:
            for text, item, p in ck.str_list(m[key], f"{path}.{key}"):
                if not Path(text).exists():
                    ck.error(item, p, "a readable certificate/key file", f"{text!r} (no such file)")
    return method, ident


def _pubkey_material(ck: _Checker, node: _Node | None, path: str, method: str, local: bool) -> tuple[
        Credentials | None, list[x509.Certificate], bool]:
    """Certificate authentication: for our side (local) the certificate (certs[0], then intermediates)
    and its private key (key); for either side the trusted CA certificates (cacerts).  Files are read
    here, so a wrong file is reported with its field; key material never reaches a message."""
    m = node.value if node is not None and isinstance(node.value, dict) else {}
    cas: list[x509.Certificate] = []
    for text, item, p in ck.str_list(m["cacerts"], f"{path}.cacerts") if "cacerts" in m else []:
        if Path(text).exists():
            try:
                cas.append(load_cert(text, f"{path}.cacerts"))
            except CertError as exc:
                ck.error(item, p, "a CA certificate (PEM or DER)", str(exc).split(": ", 1)[-1])
    rsa_pss = bool(ck.boolean(m["rsa_pss"], f"{path}.rsa_pss")) if "rsa_pss" in m else False
    if not local or method != "pubkey":
        if "key" in m:
            ck.error(m["key"], f"{path}.key", "key only in the local section with auth: pubkey", "a key file")
        return None, cas, rsa_pss
    certs = ck.str_list(m["certs"], f"{path}.certs") if "certs" in m else []
    if not certs:
        ck.error(node, f"{path}.certs", "our certificate file (auth: pubkey)", "nothing")
    if "key" not in m:
        ck.error(node, f"{path}.key", "the private key file of our certificate (auth: pubkey)", "nothing")
        return None, cas, rsa_pss
    key_path = ck.string(m["key"], f"{path}.key")
    if not certs or key_path is None or not all(Path(t).exists() for t, _, _ in certs):
        return None, cas, rsa_pss
    if not Path(key_path).exists():
        ck.error(m["key"], f"{path}.key", "a readable private key file", f"{key_path!r} (no such file)")
        return None, cas, rsa_pss
    try:
        chain = [load_cert(t, p) for t, _, p in certs]
    except CertError as exc:
        ck.error(m["certs"], f"{path}.certs", "certificate files (PEM or DER)", str(exc).split(": ", 1)[-1])
        return None, cas, rsa_pss
    try:
        return Credentials(chain[0], load_key(key_path, "key"), chain[1:]), cas, rsa_pss  # type: ignore[arg-type]
    except CertError as exc:
        ck.error(m["key"], f"{path}.key", f"the private key of {certs[0][0]} (RSA >= 2048 bits, ECDSA "
                 "P-256/384/521 or Ed25519, unencrypted PEM/DER)", str(exc).split(": ", 1)[-1])
    return None, cas, rsa_pss


def _proposals(ck: _Checker, node: _Node, path: str, protocol: str) -> list[str]:
    out = []
    example = "aes128gcm16-prfsha256-x25519, aes256-sha384-ecp384" if protocol == "ike" \
        else "aes128gcm16, aes256-sha256, aes256gcm16-esn"
    for text, item, p in ck.str_list(node, path):
        parts = [x.strip() for x in text.split(",") if x.strip()]
        for part in parts:
            try:
                parse_proposals(part, protocol)
            except ProposalError as exc:
                ck.error(item, p, f"an {protocol.upper()} proposal in strongSwan keywords (e.g. {example})", str(exc))
                continue
            out.append(part)
    return out


def _ts_list(ck: _Checker, node: _Node, path: str) -> tuple[list[TrafficSelectorEntry], list[str]]:
    out, texts = [], []
    for text, item, p in ck.str_list(node, path, comma=True):
        try:
            out.append(_parse_ts(text))
            texts.append(text)
        except ValueError as exc:
            ck.error(item, p, "a subnet like 10.1.0.0/16, optionally with [proto/port] as in 10.1.0.0/16[tcp/443]",
                     f"{text!r} ({exc})")
    return out, texts


def _child(ck: _Checker, name: str, node: _Node, path: str) -> ChildSpec | None:
    m = ck.mapping(node, path, _CHILD_KEYS)
    if not m and not isinstance(node.value, dict):
        return None
    spec = ChildSpec(name, [], [], [], [], ["aes128gcm16", "aes128-sha256"])
    for side in ("local_ts", "remote_ts"):
        if side not in m:
            ck.error(node, f"{path}.{side}", "the traffic selectors (subnets) of this side", "nothing")
            continue
        ts, texts = _ts_list(ck, m[side], f"{path}.{side}")
        setattr(spec, side, ts)
        setattr(spec, f"{side}_text", texts)
    if "esp_proposals" in m:
        spec.esp_proposals = _proposals(ck, m["esp_proposals"], f"{path}.esp_proposals", "esp")
    if "mode" in m:
        mode = ck.choice(m["mode"], f"{path}.mode", ("tunnel", "transport"), "tunnel or transport", lower=True)
        if mode is not None:
            spec.mode = Mode(mode)
    if "start_action" in m:
        sa = ck.choice(m["start_action"], f"{path}.start_action", START_ACTIONS, "none, trap or start", lower=True)
        if sa is not None:
            spec.start_action = sa
    for key in ("rekey_time", "life_time"):
        if key in m:
            d = ck.duration(m[key], f"{path}.{key}")
            if d is not None:
                setattr(spec, key, d)
    for key in ("rekey_bytes", "life_bytes", "rekey_packets", "life_packets"):
        if key in m:
            n = ck.size(m[key], f"{path}.{key}")
            if n is not None:
                setattr(spec, key, n)
    if spec.life_time and spec.rekey_time and spec.life_time <= spec.rekey_time:
        ck.error(m.get("life_time"), f"{path}.life_time", f"more than rekey_time ({spec.rekey_time}s)",
                 f"{spec.life_time}s")
    for soft, hard in (("rekey_bytes", "life_bytes"), ("rekey_packets", "life_packets")):
        s, h = getattr(spec, soft), getattr(spec, hard)
        if s and h and h <= s:
            ck.error(m.get(hard), f"{path}.{hard}", f"more than {soft} ({s})", str(h))
    if spec.mode == Mode.TRANSPORT and spec.start_action == "trap":
        pass    # fine: a host-to-host policy
    return spec


def _fragmentation(ck: _Checker, m: dict[str, _Node], path: str, conn: ConnectionConfig) -> None:
    """fragmentation (yes | accept | force | no, as swanctl) and fragment_size (RFC 7383, docs/ike.md)."""
    if "fragmentation" in m:
        node = m["fragmentation"]
        v = node.value
        # YAML 1.1 reads a bare yes/no as a boolean
        mode = ("yes" if v else "no") if isinstance(v, bool) else (v.strip().lower() if isinstance(v, str) else None)
        if mode in ("yes", "accept", "force", "no"):
            conn.fragmentation = mode
        else:
            ck.error(node, f"{path}.fragmentation", "one of yes, accept, force, no", _describe(v))
    if "fragment_size" in m:
        what = "0 (576 bytes over IPv4, 1280 over IPv6) or an IP datagram size from 280 to 65535 bytes"
        n = ck.integer(m["fragment_size"], f"{path}.fragment_size", 0, 65535, what)
        if n is not None and 0 < n < 280:
            ck.error(m["fragment_size"], f"{path}.fragment_size", what, str(n))
        elif n is not None:
            conn.fragment_size = n


def _connection(ck: _Checker, name: str, node: _Node, gw: GatewayConfig) -> ConnectionConfig | None:
    path = f"connections.{name}"
    m = ck.mapping(node, path, _CONN_KEYS)
    if not isinstance(node.value, dict):
        return None
    conn = ConnectionConfig(name, [], ["%any"], "", None, ["aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048"],
                            [])
    if "local_addrs" in m:
        conn.local_addrs = _addrs(ck, m["local_addrs"], f"{path}.local_addrs", allow_any=True)
        if "%any" in conn.local_addrs and len(conn.local_addrs) > 1:
            ck.error(m["local_addrs"], f"{path}.local_addrs", "either addresses or %any alone",
                     ", ".join(conn.local_addrs))
    else:
        conn.local_addrs = ["%any"]     # as swanctl: every local address; the route picks the source
    if "remote_addrs" in m:
        conn.remote_addrs = _addrs(ck, m["remote_addrs"], f"{path}.remote_addrs", allow_any=True)
    if "version" in m and ck.integer(m["version"], f"{path}.version", 0, 2, "2 (IKEv2)") not in (None, 0, 2):
        ck.error(m["version"], f"{path}.version", "2 (only IKEv2 is spoken)", _describe(m["version"].value))
    if "mobike" in m and ck.boolean(m["mobike"], f"{path}.mobike"):
        ck.error(m["mobike"], f"{path}.mobike", "no (MOBIKE is not supported)", "yes")
    for key in ("remote_port", "remote_natt_port"):
        if key in m:
            p = ck.integer(m[key], f"{path}.{key}", 1, 65535, "a UDP port from 1 to 65535")
            if p is not None:
                setattr(conn, key, p)
    if "proposals" in m:
        conn.proposals = _proposals(ck, m["proposals"], f"{path}.proposals", "ike")
    if "encap" in m:
        conn.encap = bool(ck.boolean(m["encap"], f"{path}.encap"))
    _fragmentation(ck, m, path, conn)
    for key in ("dpd_delay", "rekey_time", "reauth_time", "over_time", "rand_time"):
        if key in m:
            d = ck.duration(m[key], f"{path}.{key}")
            if d is not None:
                setattr(conn, key, d)
    for key in ("rekey_time", "reauth_time"):
        t = getattr(conn, key)
        if key in m and conn.rand_time is not None and t and conn.rand_time >= t:
            ck.error(m["rand_time"], f"{path}.rand_time", f"less than {key} ({t}s)", f"{conn.rand_time}s")
    conn.local_auth, local_id = _auth(ck, m.get("local"), f"{path}.local", required_id=False)
    conn.remote_auth, conn.remote_id = _auth(ck, m.get("remote"), f"{path}.remote", required_id=False)
    conn.credentials, cas_l, conn.rsa_pss = _pubkey_material(ck, m.get("local"), f"{path}.local",
                                                            conn.local_auth, True)
    _, cas_r, _ = _pubkey_material(ck, m.get("remote"), f"{path}.remote", conn.remote_auth, False)
    conn.cacerts = cas_l + cas_r
    if conn.remote_auth == "pubkey" and not conn.cacerts and "remote" in m:
        ck.error(m["remote"], f"{path}.remote.cacerts", "the CA certificate(s) the peer's certificate must "
                 "chain to (auth: pubkey)", "nothing")
    if local_id is None and conn.credentials is not None:
        # as strongSwan: with a certificate, its subject is the default identity
        local_id = dn_to_string(conn.credentials.cert.subject.public_bytes())
    if local_id is None and conn.local_addrs and conn.local_addrs[0] != "%any":
        local_id = conn.local_addrs[0]      # as strongSwan: the address is the default identity
    # with %any and no id, the address each IKE SA actually uses is the identity (ike_config(local_ip=...))
    conn.local_id = local_id or ""
    if "children" not in m:
        ck.error(node, f"{path}.children", "at least one child (CHILD SA) with local_ts and remote_ts", "nothing")
    else:
        kids = ck.mapping(m["children"], f"{path}.children", None)
        if isinstance(m["children"].value, dict) and not kids:
            ck.error(m["children"], f"{path}.children", "at least one child", "an empty mapping")
        for cname, cnode in kids.items():
            c = _child(ck, cname, cnode, f"{path}.children.{cname}")
            if c is not None:
                conn.children.append(c)
        if not conn.can_initiate:
            for c in conn.children:
                if c.start_action != "none":
                    ck.error(kids[c.name].value.get("start_action"), f"{path}.children.{c.name}.start_action",
                             "none: remote_addrs is %any, so there is no peer to initiate to", repr(c.start_action))
    return conn


def _secrets(ck: _Checker, node: _Node | None) -> list[SecretEntry]:
    out: list[SecretEntry] = []
    if node is None:
        return out
    for name, snode in ck.mapping(node, "secrets", None).items():
        path = f"secrets.{name}"
        if not name.startswith("ike"):
            ck.error(snode, path, "a section named ike or ike-NAME (pre-shared keys for IKE)", repr(name))
            continue
        m = ck.mapping(snode, path, None)
        ids: list[str] = []
        secret = None
        for key, v in m.items():
            if key == "id" or key.startswith("id-"):
                for text, item, p in ck.str_list(v, f"{path}.{key}"):
                    if _identity(ck, item, p) is not None:
                        ids.append(text)
            elif key == "secret":
                secret = _parse_secret(v)
                if secret is None:
                    # describe the shape only: never echo what may be a secret
                    ck.error(v, f"{path}.secret", "a non-empty string, 0x<hex> or 0s<base64>",
                             "a value that is none of these")
            else:
                ck.error(v, f"{path}.{key}", "id, id-<suffix> or secret", "an unknown key")
        if "secret" not in m:
            ck.error(snode, f"{path}.secret", "the pre-shared key", "nothing")
        if secret is not None:
            out.append(SecretEntry(name, ids, secret))
    return out


def _find_psk(secrets: list[SecretEntry], local_id: str, remote_id: str | None) -> bytes | None:
    """The best secret: one whose ids name both ends, then one naming either, then one naming none."""
    want = {local_id} | ({remote_id} if remote_id else set())
    best, score = None, -1
    for s in secrets:
        ids = set(s.ids)
        if ids and not ids & want:
            continue
        sc = len(ids & want) if ids else 0
        if sc > score:
            best, score = s.secret, sc
    return best


def parse_config(text: str, file: str = "<config>") -> Config:
    """Check and convert a configuration text; ``file`` names it in messages."""
    tree = _compose(text, file)
    ck = _Checker(file)
    if tree is None:
        raise ConfigError([f"{file}: the file is empty: expected gateway, connections and secrets sections"])
    top = ck.mapping(tree, "", ("gateway", "connections", "secrets"))
    gw = _gateway(ck, top.get("gateway"))
    conns: dict[str, ConnectionConfig] = {}
    if "connections" not in top:
        ck.error(tree, "connections", "at least one connection", "nothing")
    else:
        for name, cnode in ck.mapping(top["connections"], "connections", None).items():
            c = _connection(ck, name, cnode, gw)
            if c is not None:
                conns[name] = c
    secrets = _secrets(ck, top.get("secrets"))
    child_names: dict[str, str] = {}
    for conn in conns.values():
        for c in conn.children:
            if c.name in child_names:
                ck.error(top["connections"].value[conn.name].value["children"].value[c.name],
                         f"connections.{conn.name}.children.{c.name}",
                         f"a child name not used elsewhere (connection {child_names[c.name]} has one)", repr(c.name))
            child_names[c.name] = conn.name
        if "psk" in (conn.local_auth, conn.remote_auth) and (conn.local_id or conn.any_local):
            # local_addrs %any without an id: our identity is whichever address is used, so the secret
            # is found by the peer's id (or is one without ids)
            psk = _find_psk(secrets, conn.local_id, conn.remote_id)
            if psk is None:
                names = " or ".join(i for i in (conn.local_id, conn.remote_id) if i)
                ck.error(top["connections"].value[conn.name], f"connections.{conn.name}",
                         "a secrets entry (ike-...)" + (f" whose id names {names}" if names else "")
                         + ", or one without ids", "no matching pre-shared key")
            else:
                conn.psk = psk
    if ck.problems:
        raise ConfigError(ck.problems)
    return Config(file, gw, conns, secrets)


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not a text file (UTF-8 expected)"]) from None
    return parse_config(text, str(p))


def load_config_or_report(path: str | Path) -> Config | None:
    """load_config for a command: None after printing every problem to stderr, one a line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None
