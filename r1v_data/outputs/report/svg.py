"""Hand-written inline SVG charts for the report: horizontal bars, stacked bars and overlaid
histograms. Each is a few dozen elements however many rows the store holds (the numbers are
aggregated in DuckDB before they get here), needs no library and draws the same in every
browser, offline. Every label is escaped: subjects, teachers and reasons are user text."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 640
LABEL_W = 190
ROW_H = 20
# colour-blind-safe (Okabe-Ito), in the order series are drawn
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _svg(height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, s: str, anchor: str = "start", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}>{escape(s)}</text>'


def _short(s: str, n: int = 30) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _number(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 10 else f"{v:,.3g}"


def bars(items: Sequence[tuple[str, float]], title: str, unit: str = "") -> str:
    """One horizontal bar per (label, value), the value written at its end."""
    top = max((v for _, v in items), default=0) or 1
    span = WIDTH - LABEL_W - 70
    body = []
    for i, (label, value) in enumerate(items):
        y = 4 + i * ROW_H
        w = max(1.0, span * value / top) if value else 0.0
        body += [
            _text(LABEL_W - 6, y + 13, _short(label), "end"),
            f'<rect x="{LABEL_W}" y="{y + 2}" width="{w:.1f}" height="{ROW_H - 5}" fill="{PALETTE[0]}"/>',
            _text(LABEL_W + w + 4, y + 13, _number(value) + unit, cls="v"),
        ]
    return _svg(8 + len(items) * ROW_H, body, title)


def stacked(rows: Sequence[tuple[str, dict[str, float]]], title: str) -> str:
    """One bar per row split into its categories (as shares of the row), with a legend."""
    cats = list(dict.fromkeys(c for _, parts in rows for c in parts))
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(cats)}
    span = WIDTH - LABEL_W - 10
    body = _legend(cats, colour, 0)
    for i, (label, parts) in enumerate(rows):
        y, x, total = 24 + i * ROW_H, float(LABEL_W), sum(parts.values()) or 1
        body.append(_text(LABEL_W - 6, y + 13, _short(label), "end"))
        for cat, n in parts.items():
            w = span * n / total
            body.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{ROW_H - 5}" '
                        f'fill="{colour[cat]}"><title>{escape(f"{cat}: {n:,}")}</title></rect>')  # fmt: skip
            x += w
    return _svg(28 + len(rows) * ROW_H, body, title)


def _legend(names: Sequence[str], colour: dict[str, str], y: float) -> list[str]:
    out, x = [], 4.0
    for name in names:
        out += [f'<rect x="{x:.1f}" y="{y + 4}" width="10" height="10" fill="{colour[name]}"/>',
                _text(x + 14, y + 13, _short(name, 24))]  # fmt: skip
        x += 24 + 7 * len(_short(name, 24))
    return out


def histogram(series: dict[str, Sequence[float]], edges: Sequence[float], title: str) -> str:
    """Overlaid step lines, one per series, each as the share of its own total per bin, so
    series of different sizes (correct vs wrong) compare by shape; the x axis is the bin edges."""
    names = list(series)
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    left, right, top, bottom = 48, WIDTH - 10, 24, 170
    shares = {n: [c / (sum(v) or 1) for c in v] for n, v in series.items()}
    peak = max((s for v in shares.values() for s in v), default=0) or 1
    bins = len(edges) - 1
    step = (right - left) / max(bins, 1)
    body = _legend(names, colour, 0) + _axes(left, right, top, bottom, edges, peak)
    for name in names:
        points = []
        for i, share in enumerate(shares[name]):
            y = bottom - (bottom - top) * share / peak
            points += [f"{left + i * step:.1f},{y:.1f}", f"{left + (i + 1) * step:.1f},{y:.1f}"]
        body.append(f'<polyline points="{left},{bottom} {" ".join(points)} '
                    f'{right:.1f},{bottom}" fill="none" stroke="{colour[name]}" stroke-width="1.8"/>')  # fmt: skip
    return _svg(bottom + 26, body, title)


def _axes(
    left: float, right: float, top: float, bottom: float, edges: Sequence[float], peak: float
) -> list[str]:
    out = [f'<path d="M{left},{top} V{bottom} H{right}" stroke="#888" fill="none"/>',
           _text(left - 4, top + 8, f"{peak:.0%}", "end", "v"), _text(left - 4, bottom, "0", "end", "v")]  # fmt: skip
    ticks = len(edges) - 1
    for i in range(0, ticks + 1, max(1, ticks // 5)):
        x = left + (right - left) * i / max(ticks, 1)
        out.append(_text(x, bottom + 16, _number(edges[i]), "middle", "v"))
    return out
