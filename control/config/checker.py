"""Field-path reporting and the scalar readers every section shares.

A ``Checker`` records each problem as ``FILE:LINE: PATH: expected ..., got ...`` and goes on, so one run
of ``ipsecgw check`` lists every mistake.
"""

from __future__ import annotations

import re
from typing import Any

from control.config.yaml_tree import Node, Num

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Checker:
    """Walks the tree, converting fields; every problem is recorded, none stops the walk."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[str] = []

    def error(self, node: Node | None, path: str, expected: str, got: str | None = None,
              line: int | None = None) -> None:
        ln = line if line is not None else (node.line if node is not None else None)
        where = f"{self.file}:{ln}" if ln else self.file
        text = f"{where}: {path}: expected {expected}"
        if got is not None:
            text += f", got {got}"
        self.problems.append(text)

    def mapping(self, node: Node, path: str, allowed: tuple[str, ...] | None) -> dict[str, Node]:
        if not isinstance(node.value, dict):
            self.error(node, path, "a mapping (key: value lines)", describe(node.value))
            return {}
        if allowed is not None:
            for k, v in node.value.items():
                if k not in allowed:
                    self.error(v, f"{path}.{k}" if path else k, "one of the known keys: " + ", ".join(allowed),
                               "an unknown key")
        return node.value

    def string(self, node: Node, path: str) -> str | None:
        v = node.value
        if isinstance(v, Num):
            return v.text
        if isinstance(v, str) and v.strip():
            return v.strip()
        self.error(node, path, "a non-empty string", describe(v))
        return None

    def str_list(self, node: Node, path: str, comma: bool = False) -> list[tuple[str, Node, str]]:
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

    def integer(self, node: Node, path: str, lo: int, hi: int, what: str) -> int | None:
        v = node.value
        n = v.number if isinstance(v, Num) else v
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
            self.error(node, path, what, describe(v))
            return None
        return n

    def choice(self, node: Node, path: str, choices: tuple[str, ...] | list[str], expected: str | None = None,
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

    def ifname(self, node: Node, path: str) -> str | None:
        """A network interface name as the kernel takes it (IFNAMSIZ: at most 15 bytes, no '/' or space)."""
        s = self.string(node, path)
        if s is not None and (len(s.encode()) > 15 or "/" in s or " " in s):
            self.error(node, path, "an interface name of 1 to 15 characters", repr(s))
            return None
        return s

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node.value, bool):
            return node.value
        if isinstance(node.value, str) and node.value.lower() in ("yes", "no"):
            return node.value.lower() == "yes"
        self.error(node, path, "yes/no (true/false)", describe(node.value))
        return None

    def duration(self, node: Node, path: str) -> int | None:
        v = node.value
        text = v.text if isinstance(v, Num) else (str(v) if isinstance(v, str) else None)
        secs = parse_duration(text) if text is not None else None
        if secs is None:
            self.error(node, path, "a duration: seconds, or a number with s, m, h or d (30s, 1h, 1d)",
                       describe(v))
        return secs

    def size(self, node: Node, path: str) -> int | None:
        v = node.value
        text = v.text if isinstance(v, Num) else (str(v) if isinstance(v, str) else None)
        m = _SIZE.match(text.strip()) if text is not None else None
        if m is None:
            self.error(node, path, "a count: a number, optionally with k, M or G (500M)", describe(v))
            return None
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def describe(v: Any) -> str:
    if isinstance(v, Num):
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
