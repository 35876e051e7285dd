"""The soak's figures: the result the verdict judges (``result_of``), a table per minute, the SVG."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from soak.svgplot import chart
from soak.traffic import PingStream, UdpLoad
from soak.verdict import MIB, judge_pings, judge_processes, judge_sas, judge_udp


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "?"


def result_of(args: argparse.Namespace, samples: dict[str, list[dict]], pings: PingStream, udp: UdpLoad,
              windows: list[dict], t_start: float, t_end: float, events: dict[str, int],
              exits: dict[str, int]) -> dict[str, Any]:
    duration = t_end - t_start
    intervals = [vars(iv) for iv in udp.intervals]
    return {
        "minutes": duration / 60, "t_start": t_start, "t_end": t_end,
        "machine": {"cpu": _cpu(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "settings": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "pings": judge_pings(pings.log.sent, pings.log.answered, windows),
        "udp": judge_udp(intervals, windows), "udp_intervals": intervals,
        "ping_log": {"sent": pings.log.sent, "answered": pings.log.answered},
        "tool_errors": {"ping": pings.log.errors, "iperf3": udp.errors},
        "windows": windows, "events": events, "exit_status": exits,
        "gateways": {gw: {"sample_errors": sum(1 for s in smp if "error" in s),
                          "sas": judge_sas(smp, args.sample_every),
                          "processes": judge_processes(smp, t_start, duration),
                          "drops": drops(smp[-1]) if smp and "error" not in smp[-1] else {}}
                     for gw, smp in samples.items()},
    }


# control's counters that are not drops, or not new ones: fastpath events; cookie_gate (the responder
# gate's own counters, taken as ike:*, say the same by reason); natt_steering_probe, the fastpath's own
# reuseport steering probe (fastpath/io/sockets.py, one every 5 s) when it reaches control's socket
NOT_DROPS = ("event_", "cookie_gate", "natt_steering_probe")


def drops(sample: dict) -> dict[str, int]:
    """Every drop counter of one sample: the fastpath's inbound verdicts other than ok and its outbound
    ones that drop (engine-drop, no-policy, ...), the responder gate's counters, control's drop counters."""
    d = {f"esp:{k}": v for k, v in sample["fastpath"]["inbound"].items() if k != "ok"}
    d.update({f"out:{k}": v for k, v in sample["fastpath"]["outbound"].items() if k not in ("protect", "bypass",
                                                                                             "acquire")})
    d.update({f"ike:{k}": v for k, v in sample["admission"].items()})
    d.update({f"ctl:{k}": v for k, v in sample["counters"].items() if not k.startswith(NOT_DROPS)})
    return d


def minute_table(result: dict[str, Any], samples: dict[str, list[dict]], t_start: float) -> str:
    """One line per minute: pings and datagrams lost (in abuse windows in brackets), the SA counts' range on
    each gateway, RSS of each process at the minute's last sample, drops added in the minute."""
    from soak.verdict import in_window

    windows = result["windows"]
    log = result["ping_log"]
    roles = sorted({r for smp in samples.values() for s in smp if "error" not in s for r in s["processes"]})
    head = ["min", "pings", "lost(win)", "udp", "lost(win)"]
    for gw in samples:
        head += [f"{gw} ike", f"{gw} half", f"{gw} child", f"{gw} region"] + [f"{gw} {r[:4]} MiB" for r in roles]
        head += [f"{gw} drops"]
    rows = [head]
    minutes = int(result["minutes"]) + 1
    prev_drops = {gw: 0 for gw in samples}
    for m in range(minutes):
        lo, hi = t_start + 60 * m, t_start + 60 * (m + 1)
        sent = [(t, a) for t, a in zip(log["sent"], log["answered"], strict=True) if lo <= t < hi]
        lost = [t for t, a in sent if not a]
        ivs = [iv for iv in result["udp_intervals"] if lo <= iv["start"] < hi]
        wl = [iv for iv in ivs if any(iv["start"] <= w["end"] + 3 and iv["end"] >= w["start"] - 0.5
                                      for w in windows)]
        row = [str(m), str(len(sent)), f"{len(lost)}({sum(in_window(t, windows) for t in lost)})",
               str(sum(iv["packets"] for iv in ivs)),
               f"{sum(iv['lost'] for iv in ivs)}({sum(iv['lost'] for iv in wl)})"]
        for gw, smp in samples.items():
            got = [s for s in smp if "error" not in s and lo <= s["t"] < hi]
            if not got:
                row += ["-"] * (5 + len(roles))
                continue
            for k in ("ike_sas", "half_open", "child_sas", "region_sas"):
                a, b = min(s[k] for s in got), max(s[k] for s in got)
                row.append(f"{a}" if a == b else f"{a}-{b}")
            for r in roles:
                rss = got[-1]["processes"].get(r, {}).get("rss")
                row.append(f"{rss / MIB:.1f}" if rss else "-")
            total = sum(drops(got[-1]).values())
            row.append(str(total - prev_drops[gw]))
            prev_drops[gw] = total
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def plot(result: dict[str, Any], samples: dict[str, list[dict]], t_start: float) -> str:
    rss: dict[str, list[tuple[float, float]]] = {}
    fds: dict[str, list[tuple[float, float]]] = {}
    sas: dict[str, list[tuple[float, float]]] = {}
    half: dict[str, list[tuple[float, float]]] = {}
    for gw, smp in samples.items():
        for s in smp:
            if "error" in s:
                continue
            t = s["t"] - t_start
            for role, p in s["processes"].items():
                if p["rss"]:
                    rss.setdefault(f"gw {gw} {role}", []).append((t, p["rss"] / MIB))
                if p["fds"] is not None:
                    fds.setdefault(f"gw {gw} {role}", []).append((t, p["fds"]))
            for k in ("ike_sas", "child_sas", "region_sas"):
                sas.setdefault(f"gw {gw} {k.replace('_sas', '')}", []).append((t, s[k]))
            half.setdefault(f"gw {gw}", []).append((t, s["half_open"]))
    wins = [(w["start"] - t_start, w["end"] - t_start) for w in result["windows"]]
    return chart([("RSS (MiB)", rss), ("SAs (IKE, CHILD, region slots)", sas), ("half-open IKE SAs", half),
                  ("open fds", fds)], wins,
                 result["t_end"] - t_start, result["verdict"][:110] + ("..." if len(result["verdict"]) > 110 else ""))
