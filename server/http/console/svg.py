"""Small charts drawn on the server as SVG: the drift heatmap and the triggers sparkline.

They need no script (so they show with scripting off and print well); every text that reaches the
SVG goes through markupsafe's escape, since feature names and rule names come from outside.
"""

from __future__ import annotations

from typing import Sequence

from markupsafe import Markup, escape

CELL_W, CELL_H, LABEL_W, TOP = 18, 18, 150, 6


def _colour(value: float, high: float) -> str:
    """White (0) to deep orange (>= high): readable on white, and each cell also carries its value
    in a <title> for screen readers and hover."""
    share = max(0.0, min(1.0, value / high)) if high > 0 else 0.0
    g = round(245 - 155 * share)
    b = round(240 - 200 * share)
    return f"rgb(250,{g},{b})"


def heatmap(features: Sequence[str], columns: Sequence[str], values: dict[tuple[str, str], float],
            caption: str) -> Markup:
    """Rows are features, columns are windows (oldest left); a missing value is a grey cell."""
    high = max((abs(v) for v in values.values()), default=0.0)
    width = LABEL_W + CELL_W * max(len(columns), 1) + 4
    height = TOP + CELL_H * max(len(features), 1) + 4
    parts = [f'<svg class="heatmap" role="img" aria-label="{escape(caption)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for r, feature in enumerate(features):
        y = TOP + r * CELL_H
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + CELL_H - 5}" text-anchor="end">{escape(feature)}</text>')
        for c, column in enumerate(columns):
            x = LABEL_W + c * CELL_W
            value = values.get((feature, column))
            fill = "#ddd" if value is None else _colour(abs(value), high)
            label = f"{feature} at {column}: " + ("no value" if value is None else f"{value:.4g}")
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" fill="{fill}">'
                         f'<title>{escape(label)}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float], label: str, width: int = 140, height: int = 28) -> Markup:
    """A line of counts (oldest left) with the last point marked."""
    if not values:
        values = [0]
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    points = [(i * step, height - 3 - (v / top) * (height - 6)) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    last_x, last_y = points[-1]
    return Markup(f'<svg class="sparkline" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
                  f'<polyline points="{line}" fill="none" stroke="#1f5fa8" stroke-width="1.5"/>'
                  f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5" fill="#1f5fa8"/></svg>')
