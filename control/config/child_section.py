"""A connection's ``children:`` entries (CHILD SAs): traffic selectors, ESP or AH proposals, mode, start
action and lifetimes, into ``ChildSpec``."""

from __future__ import annotations

import ipaddress
import re

from cdefs.sa import Mode
from control.config.checker import Checker
from control.config.model import ChildSpec
from control.config.validators import parse_proposal_list
from control.config.yaml_tree import Node
from control.ike.message import TrafficSelectorEntry

START_ACTIONS = ("none", "trap", "start")
_PROTO_NAMES = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "gre": 47}
_CHILD_KEYS = ("local_ts", "remote_ts", "esp_proposals", "ah_proposals",
               "mode", "start_action", "rekey_time", "life_time",
               "rekey_bytes", "life_bytes", "rekey_packets", "life_packets", "dpd_action")


def _parse_ts(text: str) -> TrafficSelectorEntry:
    """``10.1.0.0/16``, ``10.1.0.5``, ``10.1.0.0/16[tcp/443]``, ``0.0.0.0/0[udp/5000-5100]``, ``dynamic`` apart."""
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


# ``dynamic`` stands for any address of either family; narrowing (control/ike/vip.py) makes it one host
_DYNAMIC = [TrafficSelectorEntry.from_network("0.0.0.0/0"), TrafficSelectorEntry.from_network("::/0")]


def _ts_list(ck: Checker, node: Node, path: str) -> tuple[list[TrafficSelectorEntry], list[str]]:
    out, texts = [], []
    for text, item, p in ck.str_list(node, path, comma=True):
        if text == "dynamic":
            out += [t for t in _DYNAMIC if t not in out]
            texts.append(text)
            continue
        try:
            out.append(_parse_ts(text))
            texts.append(text)
        except ValueError as exc:
            ck.error(item, p, "a subnet like 10.1.0.0/16, optionally with [proto/port] as in 10.1.0.0/16[tcp/443]",
                     f"{text!r} ({exc})")
    return out, texts


def parse_child(ck: Checker, name: str, node: Node, path: str) -> ChildSpec | None:
    m = ck.mapping(node, path, _CHILD_KEYS)
    if not m and not isinstance(node.value, dict):
        return None
    spec = ChildSpec(name, [], [], [], [], ["aes128gcm16", "aes128-sha256"])
    for side in ("local_ts", "remote_ts"):
        if side not in m:
            ck.error(node, f"{path}.{side}", "the traffic selectors (subnets) of this side", "nothing")
            continue
        ts, texts = _ts_list(ck, m[side], f"{path}.{side}")
        if "dynamic" in texts and len(texts) > 1:
            ck.error(m[side], f"{path}.{side}", "either dynamic alone or subnets", ", ".join(texts))
        setattr(spec, side, ts)
        setattr(spec, f"{side}_text", texts)
        setattr(spec, f"{side.split('_')[0]}_dynamic", texts == ["dynamic"])
    if "esp_proposals" in m and "ah_proposals" in m:
        # one protocol per child, as in swanctl.conf (AH+ESP bundles are not supported)
        ck.error(m["ah_proposals"], f"{path}.ah_proposals", "either esp_proposals or ah_proposals, not both",
                 "both")
    elif "ah_proposals" in m:
        spec.ah_proposals = parse_proposal_list(ck, m["ah_proposals"], f"{path}.ah_proposals", "ah")
        spec.esp_proposals = []
    elif "esp_proposals" in m:
        spec.esp_proposals = parse_proposal_list(ck, m["esp_proposals"], f"{path}.esp_proposals", "esp")
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
    if spec.remote_dynamic and spec.start_action == "trap":
        # a trap on dynamic would be a policy for every address: the peer's address is known only once up
        ck.error(m.get("start_action"), f"{path}.start_action", "none or start (remote_ts is dynamic)", "trap")
    if spec.mode == Mode.TRANSPORT and spec.start_action == "trap":
        pass    # fine: a host-to-host policy
    return spec
