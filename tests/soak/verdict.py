"""The soak's pass criteria (docs/soak.md states them), applied to what the driver collected.

- Pings: none lost outside the abuse windows.  A window runs from ``WINDOW_BEFORE`` s before its first
  garbage packet to ``WINDOW_AFTER`` s after the end of its flood; losses in it are counted and shown, not
  judged.  Rekeys, reauthentications and DPD are never excused.
- iperf3 UDP: lost datagrams outside the windows at most ``UDP_LOSS_MAX`` of those sent there.
- SAs: after each rekey every count (IKE SAs past IKE_SA_INIT, CHILD SAs, SAs in the shared-memory region)
  is back to its steady value within ``SA_SETTLE`` s, and at the end of the run it is the steady value;
  the half-open SAs a flood leaves drain to 0 within ``SA_SETTLE["half_open"]`` s (half_open_timeout, 30 s
  by default, and a margin).
- RSS of each process: past the warm-up, the median of the last third of the samples is less than
  ``RSS_GROWTH_MAX`` above the median of the first third, and the least-squares line through all of them
  rises less than that over the run.  Open fds: median of the last third at most ``FD_GROWTH_MAX`` above the
  first third's.
- No process restarted (restart counters 0, the same pids throughout); every sample answered.
"""

from __future__ import annotations

import statistics
from typing import Any

MIB = 1 << 20
WINDOW_BEFORE, WINDOW_AFTER = 0.5, 3.0
UDP_LOSS_MAX = 0.001
SA_SETTLE = {"ike_sas": 30.0, "child_sas": 30.0, "region_sas": 30.0, "half_open": 45.0}
RSS_GROWTH_MAX = 4 * MIB
FD_GROWTH_MAX = 2
STEADY = {"ike_sas": 1, "child_sas": 1, "region_sas": 2, "half_open": 0}


def in_window(t: float, windows: list[dict]) -> bool:
    return any(w["start"] - WINDOW_BEFORE <= t <= w["end"] + WINDOW_AFTER for w in windows)


def warmup(duration: float) -> float:
    """Seconds at the start left out of the RSS and fd trends (imports, first SAs, allocator arenas)."""
    return min(60.0, 0.2 * duration)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def trend(points: list[tuple[float, float]]) -> dict[str, float]:
    """first/last value, the growth of the median of the last third over the first third, the slope, and
    the fitted line's rise over the span of the points."""
    k = max(1, len(points) // 3)
    first, last = [v for _, v in points[:k]], [v for _, v in points[-k:]]
    s = slope(points)
    return {"first": points[0][1], "last": points[-1][1], "median_first_third": statistics.median(first),
            "median_last_third": statistics.median(last),
            "growth": statistics.median(last) - statistics.median(first), "slope_per_min": s * 60,
            "fitted_rise": s * (points[-1][0] - points[0][0])}


def judge_pings(sent: list[float], answered: list[bool], windows: list[dict]) -> dict[str, Any]:
    lost = [t for t, ok in zip(sent, answered, strict=True) if not ok]
    lost_in = [t for t in lost if in_window(t, windows)]
    sent_in = sum(1 for t in sent if in_window(t, windows))
    return {"sent": len(sent), "sent_outside": len(sent) - sent_in, "lost": len(lost), "lost_in_windows": len(lost_in),
            "lost_outside": len(lost) - len(lost_in),
            "lost_outside_times": [round(t, 2) for t in lost if not in_window(t, windows)][:50]}


def judge_udp(intervals: list[dict], windows: list[dict]) -> dict[str, Any]:
    def touches(iv: dict) -> bool:
        return any(iv["start"] <= w["end"] + WINDOW_AFTER and iv["end"] >= w["start"] - WINDOW_BEFORE
                   for w in windows)
    out = [iv for iv in intervals if not touches(iv)]
    sent_out, lost_out = sum(iv["packets"] for iv in out), sum(iv["lost"] for iv in out)
    return {"packets": sum(iv["packets"] for iv in intervals), "lost": sum(iv["lost"] for iv in intervals),
            "packets_outside": sent_out, "lost_outside": lost_out,
            "loss_outside": lost_out / sent_out if sent_out else 0.0}


def judge_sas(samples: list[dict], interval: float) -> dict[str, Any]:
    """Per count: its maximum, the longest stretch above the steady value, and the last value."""
    good = [s for s in samples if "error" not in s]
    out: dict[str, Any] = {}
    for key, steady in STEADY.items():
        longest, run_start = 0.0, None
        for s in good:
            if s[key] > steady:
                run_start = s["t"] if run_start is None else run_start
                longest = max(longest, s["t"] - run_start + interval)
            else:
                run_start = None
        out[key] = {"steady": steady, "max": max((s[key] for s in good), default=None),
                    "min": min((s[key] for s in good), default=None), "longest_above_s": round(longest, 1),
                    "last": good[-1][key] if good else None}
    return out


def judge_processes(samples: list[dict], t_start: float, duration: float) -> dict[str, Any]:
    good = [s for s in samples if "error" not in s]
    cut = t_start + warmup(duration)
    roles = sorted({r for s in good for r in s["processes"]})
    out: dict[str, Any] = {}
    for role in roles:
        seen = [(s["t"], s["processes"][role]) for s in good if role in s["processes"]]
        pids = sorted({p["pid"] for _, p in seen if p["pid"]})
        rss = [(t, p["rss"]) for t, p in seen if p["rss"] is not None and t >= cut]
        fds = [(t, p["fds"]) for t, p in seen if p["fds"] is not None and t >= cut]
        out[role] = {"pids": pids, "restarts": max((p["restarts"] or 0 for _, p in seen), default=0),
                     "rss": trend(rss) if len(rss) >= 3 else None, "fds": trend(fds) if len(fds) >= 3 else None}
    return out


def failures(result: dict[str, Any]) -> list[str]:
    """Each broken criterion as a short phrase (empty: PASSED)."""
    bad = []
    p = result["pings"]
    if p["sent"] == 0:
        bad.append("no ping sent")
    if p["lost_outside"]:
        bad.append(f"{p['lost_outside']} ping(s) lost outside the abuse windows")
    u = result["udp"]
    if u["packets"] == 0:
        bad.append("no iperf3 datagram sent")
    if u["loss_outside"] > UDP_LOSS_MAX:
        bad.append(f"iperf3 lost {u['lost_outside']} of {u['packets_outside']} outside the windows")
    for tool, errs in result["tool_errors"].items():
        if errs:
            bad.append(f"{tool} failed {len(errs)} time(s)")
    for gw, g in result["gateways"].items():
        if g["sample_errors"]:
            bad.append(f"gw {gw}: {g['sample_errors']} sample(s) unanswered")
        for key, s in g["sas"].items():
            if s["longest_above_s"] > SA_SETTLE[key]:
                bad.append(f"gw {gw}: {key} above {s['steady']} for {s['longest_above_s']} s")
            if s["last"] != s["steady"]:
                bad.append(f"gw {gw}: {key} ends at {s['last']}, not {s['steady']}")
        for role, r in g["processes"].items():
            if r["restarts"] or len(r["pids"]) > 1:
                bad.append(f"gw {gw}: {role} restarted ({r['restarts']}, pids {r['pids']})")
            if r["rss"] and (r["rss"]["growth"] >= RSS_GROWTH_MAX or r["rss"]["fitted_rise"] >= RSS_GROWTH_MAX):
                bad.append(f"gw {gw}: {role} RSS grew {r['rss']['growth'] / MIB:.1f} MiB "
                           f"(fitted {r['rss']['fitted_rise'] / MIB:.1f} MiB)")
            if r["fds"] and r["fds"]["growth"] > FD_GROWTH_MAX:
                bad.append(f"gw {gw}: {role} fds grew by {r['fds']['growth']:.0f}")
    return bad


def verdict_line(result: dict[str, Any], bad: list[str]) -> str:
    p, u, ev = result["pings"], result["udp"], result["events"]
    rss = max((r["rss"]["growth"] for g in result["gateways"].values() for r in g["processes"].values()
               if r["rss"]), default=0.0)
    restarts = sum(r["restarts"] for g in result["gateways"].values() for r in g["processes"].values())
    sa_max = max(s["max"] or 0 for g in result["gateways"].values() for s in (g["sas"]["child_sas"],))
    line = (f"soak: {'FAILED' if bad else 'PASSED'} in {result['minutes']:.1f} min: lost {p['lost_outside']} of "
            f"{p['sent_outside']} pings outside the {len(result['windows'])} abuse windows "
            f"({p['lost_in_windows']} of {p['sent'] - p['sent_outside']} in them), iperf3 UDP lost "
            f"{u['lost_outside']} of {u['packets_outside']} outside them, {ev['child_rekeys']} CHILD rekeys, "
            f"{ev['ike_rekeys']} IKE rekeys, {ev['reauths']} reauths, CHILD SAs at most {sa_max}, largest RSS "
            f"growth {rss / MIB:.2f} MiB, {restarts} restarts")
    return line + ("; " + "; ".join(bad) if bad else "")
