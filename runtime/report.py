"""Reports people look at: a terminal summary with bars, and an SVG chart file.

No plotting library: the charts are a few dozen lines of SVG, which every browser shows and
every diff tool can read.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Sequence
from typing import Any, TextIO

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """``values`` squeezed into ``width`` block characters (max of each bucket)."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))
    buckets = [max(values[i : i + step]) for i in range(0, len(values), step)]
    top = max(buckets) or 1
    return "".join(BARS[round(v / top * (len(BARS) - 1))] for v in buckets)


def duration(ms: float | None) -> str:
    """A latency in the unit that reads best."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


class Progress:
    """A one-line progress bar on a terminal; a few plain lines otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr  # looked up late: tests and tools swap sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last = -1

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if percent == self._last or (not self.tty and percent % 25):
            return
        self._last = percent
        filled = round(fraction * self.width)
        bar = "█" * filled + "·" * (self.width - filled)
        end = "\r" if self.tty and percent < 100 else "\n"
        self.stream.write(f"{self.label} [{bar}] {percent:3d}%{end}")
        self.stream.flush()


def svg_chart(
    title: str, series: Sequence[tuple[float, float]], x_label: str, y_label: str,
    shade: tuple[float, float] | None = None, width: int = 720, height: int = 260,
) -> str:  # fmt: skip
    """A line chart of ``(x, y)`` points; ``shade`` marks an x interval (e.g. a partition)."""
    left, right, top, bottom = 60, 20, 34, 40
    xs = [x for x, _ in series] or [0.0]
    ys = [y for _, y in series] or [0.0]
    x0, x1 = min(xs), max(xs) or 1.0
    y1 = max(ys) or 1.0

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - y / y1 * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    if shade is not None:
        parts.append(
            f'<rect x="{px(shade[0]):.1f}" y="{top}" width="{px(shade[1]) - px(shade[0]):.1f}" '
            f'height="{height - top - bottom}" fill="#f4d7d7"/>'
        )
    axis_y = height - bottom
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#333"/>'
    )
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#333"/>')
    for i in range(5):
        value = y1 * i / 4
        parts.append(
            f'<text x="{left - 6}" y="{py(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>'
        )
        xv = x0 + (x1 - x0) * i / 4
        parts.append(
            f'<text x="{px(xv):.1f}" y="{axis_y + 16}" text-anchor="middle">{xv:.1f}</text>'
        )
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#2a6fb0" stroke-width="2"/>')
    parts.append(
        f'<text x="{(width + left) / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{(height) / 2}" transform="rotate(-90 14 {(height) / 2})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table, columns right-aligned except the first."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("─" * w for w in widths))
    return "\n".join(lines)
