"""What this host can run: ESP engines, the algorithms each serves, crypto CPU features, DPDK devices.

Data only; ``ipsecgw caps`` renders it as a table or JSON.  DPDK devices are
discovered in a child process (``fastpath.dpdk.caps``) so the caller never
starts DPDK's EAL itself.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
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


def dpdk_section(vdevs: Sequence[str] | None = None, pci: Sequence[str] = ()) -> dict[str, Any]:
    """DPDK: whether the binding is present (and why not), and the devices found with these vdevs/PCI devices.

    ``vdevs`` None starts the default crypto vdevs (the software PMDs);
    an empty list starts none (only PCI devices, if any, are probed).
    """
    try:
        from fastpath.dpdk import caps as dcaps
        from fastpath.dpdk.eal import DpdkUnavailable, EalError, availability
        from fastpath.placement import EngineKind, esp_algorithms
    except ImportError as exc:   # a partial install without the fastpath.dpdk package
        return {"present": False, "detail": f"fastpath.dpdk is not installed: {exc}", "devices": []}
    present, detail = availability()
    out: dict[str, Any] = {"present": present, "detail": detail, "devices": []}
    if not present:
        return out
    vdevs = list(dcaps.DEFAULT_CRYPTO_VDEVS if vdevs is None else vdevs)
    out["vdevs"], out["pci"] = vdevs, list(pci)
    try:
        found = dcaps.discover_in_subprocess(vdevs, pci=pci)
    except (DpdkUnavailable, EalError) as exc:
        out["error"] = str(exc)
        return out
    for e in found.ethdevs:
        offloads = sorted({f"{c.action} ({c.protocol})" for c in e.security})
        ipsec = [c for c in e.security if c.protocol == "ipsec"]
        out["devices"].append({
            "device": e.name, "driver": e.driver, "type": "ethdev", "port": e.port,
            "offloads": offloads,
            "esp_algorithms": sorted({a for c in ipsec for a in esp_algorithms(c.crypto)}),
            "limits": {"rx_queues": e.max_rx_queues, "tx_queues": e.max_tx_queues,
                       "rx_security": e.rx_security, "tx_security": e.tx_security,
                       "replay_window": max((c.replay_win_max for c in ipsec), default=0),
                       "options": sorted({o for c in ipsec for o in c.options})},
        })
    for d in found.cryptodevs:
        offloads = []
        if d.symmetric and d.sym:
            offloads.append(str(EngineKind.LOOKASIDE_CRYPTO))
        if d.cpu_crypto:
            offloads.append(str(EngineKind.CPU_CRYPTO))
        offloads += sorted({f"{c.action} ({c.protocol})" for c in d.security})
        out["devices"].append({
            "device": d.name, "driver": d.driver, "type": "cryptodev", "dev_id": d.dev_id,
            "offloads": offloads,
            "esp_algorithms": esp_algorithms(d.sym, d.chaining),
            "limits": {"queue_pairs": d.max_queue_pairs, "sessions": d.max_sessions or None,
                       "features": sorted(d.features)},
        })
    out["tables"] = found.to_dict()
    return out


def collect(dpdk: bool = True, dpdk_vdevs: Sequence[str] | None = None,
            dpdk_pci: Sequence[str] = ()) -> dict[str, Any]:
    """Everything ``ipsecgw caps`` shows, as plain JSON-able data.

    ``dpdk`` False skips DPDK device discovery (presence is still reported).
    """
    engines = discover()
    algorithms = {}
    for name in (*ENC_ALGS, *INTEG_ALGS):
        algorithms[name] = [e.name for e in engines if e.present and name in e.algorithms]
    ah = {name: [e.name for e in engines if e.present and name in e.ah_algorithms] for name in AH_INTEG_ALGS}
    return {
        "engines": [
            {"name": e.name, "present": e.present, "detail": e.detail, "algorithms": list(e.algorithms),
             "ah_algorithms": list(e.ah_algorithms)}
            for e in engines
        ],
        "best": next((e.name for e in engines if e.present), None),
        "algorithms": algorithms,
        "ah_algorithms": ah,
        "cpu": cpu_info(),
        "dpdk": dpdk_section(dpdk_vdevs, dpdk_pci) if dpdk else _dpdk_presence(),
    }


def _dpdk_presence() -> dict[str, Any]:
    try:
        from fastpath.dpdk.eal import availability
    except ImportError as exc:
        return {"present": False, "detail": f"fastpath.dpdk is not installed: {exc}", "devices": []}
    present, detail = availability()
    return {"present": present, "detail": detail, "devices": [], "skipped": "device discovery not requested"}


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
    lines.append("")
    lines.append("AH (RFC 4302) integrity, software engines only (no device here offloads AH):")
    for alg, served in caps.get("ah_algorithms", {}).items():
        cells = "  ".join(f"{('yes' if n in served else '-'):<{len(n)}}" for n in engine_names)
        lines.append(f"  {alg:<{aw}}  {cells}".rstrip())
    cpu = caps["cpu"]
    lines.append("")
    lines.append(f"CPU: {cpu['model']}")
    for feat, have in cpu["features"].items():
        lines.append(f"  {feat:<11} {'unknown' if have is None else 'yes' if have else 'no'}")
    if "dpdk" in caps:
        lines.append("")
        lines.extend(_format_dpdk(caps["dpdk"]))
    return "\n".join(lines)


def _format_dpdk(d: dict[str, Any]) -> list[str]:
    if not d["present"]:
        return [f"DPDK: absent ({d['detail']})"]
    lines = [f"DPDK: present ({d['detail']})"]
    if d.get("skipped"):
        lines.append(f"  {d['skipped']}")
        return lines
    lines.append(f"  vdevs: {', '.join(d.get('vdevs') or ['none'])}" +
                 (f"; PCI: {', '.join(d['pci'])}" if d.get("pci") else ""))
    if d.get("error"):
        lines.append(f"  discovery failed: {d['error']}")
        return lines
    if not d["devices"]:
        lines.append("  no devices found")
        return lines
    rows = [("device", "driver", "offloads", "limits")]
    for dev in d["devices"]:
        lim = dev["limits"]
        if dev["type"] == "ethdev":
            limits = f"queues {lim['rx_queues']}/{lim['tx_queues']}"
            if lim["replay_window"]:
                limits += f", replay window <= {lim['replay_window']}"
            if lim["options"]:
                limits += ", " + " ".join(lim["options"])
        else:
            limits = f"queue pairs {lim['queue_pairs']}, sessions {lim['sessions'] or 'unlimited'}"
        rows.append((dev["device"], dev["driver"], ", ".join(dev["offloads"]) or "-", limits))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, r in enumerate(rows):
        lines.append("  " + "  ".join(f"{c:<{w}}" for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
        if i:
            algs = d["devices"][i - 1]["esp_algorithms"]
            lines.append(f"  {'':<{widths[0]}}  ESP: {' '.join(algs) if algs else 'none'}; AH: not offloaded")
    return lines
