"""What this host can run: ESP engines, the algorithms each serves, crypto CPU features.

Data only; ``ipsecgw caps`` renders it as a table or JSON.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from fastpath.algorithms import ENC_ALGS, INTEG_ALGS
from fastpath.engines import discover

# Flags that decide how fast AES-GCM/CBC, GHASH and SHA run (OpenSSL picks code paths on them).
CPU_FEATURES = ("aes", "pclmulqdq", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model and the crypto-relevant feature flags; flags are None when unknown."""
    model = platform.processor() or platform.machine()
    flags: set[str] | None = None
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:   # x86 / arm64 spelling
            flags = set(value.split())
    if flags is not None and "sha_ni" not in flags and "sha2" in flags:
        flags.add("sha_ni")   # arm64 reports SHA-256 instructions as sha2
    return {
        "model": model,
        "features": {f: (f in flags if flags is not None else None) for f in CPU_FEATURES},
    }


def collect() -> dict[str, Any]:
    """Everything ``ipsecgw caps`` shows, as plain JSON-able data."""
    engines = discover()
    algorithms = {}
    for name in (*ENC_ALGS, *INTEG_ALGS):
        algorithms[name] = [e.name for e in engines if e.present and name in e.algorithms]
    return {
        "engines": [
            {"name": e.name, "present": e.present, "detail": e.detail, "algorithms": list(e.algorithms)}
            for e in engines
        ],
        "best": next((e.name for e in engines if e.present), None),
        "algorithms": algorithms,
        "cpu": cpu_info(),
    }


def format_table(caps: dict[str, Any]) -> str:
    """A readable rendering of ``collect()``."""
    lines = ["Engines:"]
    width = max((len(e["name"]) for e in caps["engines"]), default=0)
    for e in caps["engines"]:
        state = "present" if e["present"] else "absent "
        mark = " (best)" if e["name"] == caps["best"] else ""
        lines.append(f"  {e['name']:<{width}}  {state}  {e['detail'] or '-'}{mark}")
    engine_names = [e["name"] for e in caps["engines"]]
    lines.append("")
    lines.append("Algorithms:")
    aw = max(len(a) for a in caps["algorithms"])
    lines.append(f"  {'':<{aw}}  " + "  ".join(engine_names))
    for alg, served in caps["algorithms"].items():
        cells = "  ".join(f"{('yes' if n in served else '-'):<{len(n)}}" for n in engine_names)
        lines.append(f"  {alg:<{aw}}  {cells}".rstrip())
    cpu = caps["cpu"]
    lines.append("")
    lines.append(f"CPU: {cpu['model']}")
    for feat, have in cpu["features"].items():
        lines.append(f"  {feat:<11} {'unknown' if have is None else 'yes' if have else 'no'}")
    return "\n".join(lines)
