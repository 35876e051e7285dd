"""A small SVG line chart of the soak (no plotting library): panels stacked on one time axis, abuse windows
shaded in each."""

from __future__ import annotations

import math
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
W, LEFT, RIGHT, PANEL_H, GAP, TOP = 900, 70, 190, 220, 50, 30


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values between lo and hi, about n of them (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(n + 2) if first + i * step <= hi]


def chart(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], windows: list[tuple[float, float]],
          t_max: float, title: str) -> str:
    """panels: (y label, {series name: [(t seconds, value)]}); windows: (start, end) in seconds."""
    plot_w = W - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_H + GAP) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']

    def x(t: float) -> float:
        return LEFT + plot_w * t / t_max if t_max else LEFT

    for i, (label, series) in enumerate(panels):
        y0 = TOP + i * (PANEL_H + GAP)
        values = [v for pts in series.values() for _, v in pts]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad

        def y(v: float, y0: int = y0, lo: float = lo, hi: float = hi) -> float:
            return y0 + PANEL_H - PANEL_H * (v - lo) / (hi - lo)

        for s, e in windows:
            out.append(f'<rect x="{x(s):.1f}" y="{y0}" width="{max(1.0, x(e) - x(s)):.1f}" height="{PANEL_H}" '
                       f'fill="#f4c7c3" opacity="0.6"/>')
        out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>')
        for v in _ticks(lo, hi):
            out.append(f'<line x1="{LEFT - 4}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                       f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        for m in _ticks(0, t_max / 60, 8):
            out.append(f'<text x="{x(m * 60):.1f}" y="{y0 + PANEL_H + 14}" text-anchor="middle">{m:g}</text>')
        out.append(f'<text x="{LEFT + plot_w / 2}" y="{y0 + PANEL_H + 28}" text-anchor="middle">minutes</text>')
        out.append(f'<text transform="translate(14 {y0 + PANEL_H / 2}) rotate(-90)" text-anchor="middle">'
                   f'{escape(label)}</text>')
        for j, (name, pts) in enumerate(series.items()):
            c = COLOURS[j % len(COLOURS)]
            if pts:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
            ly = y0 + 12 + j * 15
            out.append(f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" '
                       f'stroke-width="2"/><text x="{W - RIGHT + 32}" y="{ly}">{escape(name)}</text>')
    out.append(f'<text x="{W - RIGHT + 10}" y="{height - 12}" fill="#b04040">shaded: abuse windows</text>')
    out.append("</svg>")
    return "\n".join(out)
