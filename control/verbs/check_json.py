"""``ipsecgw check --json``: the check's verdict as one JSON object, each error split into the file,
line, field, what was expected and what was found (docs/operator-guide.md, "JSON output")."""

from __future__ import annotations

import json
import re
from typing import Any

from control.config import Config, ConfigError, load_config

_PROBLEM = re.compile(r"^(?::(?P<line>\d+))?: (?:(?P<field>[^\s:]+): expected (?P<expected>.*?)"
                      r"(?:, got (?P<got>.*))?|(?P<other>.*))$", re.S)


def split_problem(file: str, text: str) -> dict[str, Any]:
    """One of ConfigError's lines (``FILE:LINE: FIELD: expected X, got Y``) as its parts; a part the line
    does not have is null (a file that cannot be read or is not YAML has only text, file and line)."""
    out: dict[str, Any] = {"text": text, "file": file, "line": None, "field": None, "expected": None, "got": None}
    m = _PROBLEM.match(text[len(file):]) if text.startswith(file) else None
    if m is None:
        return out
    out["line"] = int(m["line"]) if m["line"] else None
    if m["field"]:
        out.update(field=m["field"], expected=m["expected"], got=m["got"])
    return out


def summary(cfg: Config) -> list[dict[str, Any]]:
    return [{"name": conn.name, "children": [
        {"name": c.name, "protocol": c.protocol, "mode": str(c.mode.value), "proposals": c.ah_proposals or
         c.esp_proposals} for c in conn.children]} for conn in cfg.connections.values()]


def check_json(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        errors = [split_problem(str(path), p) for p in exc.problems]
        print(json.dumps({"file": str(path), "ok": False, "connections": [], "errors": errors}, indent=2))
        return 2
    print(json.dumps({"file": str(path), "ok": True, "connections": summary(cfg), "errors": []}, indent=2))
    return 0
