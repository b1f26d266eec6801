"""Server-rendered charts: the geometry of an inline SVG for a list of rollup points
(web.dashboard.rollup_reads), computed here and drawn by the `_chart.html` template.

No script and no colours in the markup: each shape has a class (`bar-handled`,
`line-p95`...) that web/static/dashboard.css colours through its variables, so the charts
follow the light and dark themes, and the viewBox scales them to any width. Every bar and
line carries its values as data attributes, and a table under each chart gives the same
figures in words (screen readers, tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from web.dashboard.rollup_reads import Point, Span

__all__ = ["Bar", "Chart", "Line", "duration_chart", "format_ms", "throughput_chart"]

WIDTH, HEIGHT = 600, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 24
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))


# Coordinates are rounded to 0.1 here, so that the template prints them as they are.
@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    css: str
    at: str
    value: int


@dataclass(frozen=True, slots=True)
class Line:
    css: str
    label: str
    path: str
    values: str  # comma-separated, "" where an interval had no sample


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    bars: tuple[Bar, ...]
    lines: tuple[Line, ...]
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]
    legend: tuple[tuple[str, str], ...]  # (css class, label)
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_w: int = PLOT_W
    plot_h: int = PLOT_H


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _x_ticks(points: Sequence[Point], span: Span) -> tuple[tuple[float, str], ...]:
    if not points:
        return ()
    every = {"1h": 900, "24h": 6 * 3600, "14d": 2 * 86400}.get(span.name, span.seconds // 4)
    fmt = "%b %d" if span.seconds > 86400 else "%H:%M"
    step_w = PLOT_W / len(points)
    return tuple(
        (round(LEFT + i * step_w, 1), datetime.fromtimestamp(p.at, UTC).strftime(fmt))
        for i, p in enumerate(points)
        if p.at % every == 0 and i * step_w < PLOT_W - 20  # a label must fit
    )


def _nice_top(peak: int) -> int:
    if peak <= 4:
        return 4
    magnitude = 10 ** math.floor(math.log10(peak))
    for m in (1, 2, 2.5, 5, 10):
        if peak <= m * magnitude:
            return int(m * magnitude)
    return peak  # pragma: no cover - m = 10 always fits


def _stamp(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def throughput_chart(
    chart_id: str, title: str, points: Sequence[Point], span: Span, *, published: bool = False
) -> Chart:
    """Handled (and failed stacked on it) per interval; the relay's published instead when
    `published`."""
    n = max(len(points), 1)
    step_w = PLOT_W / n
    if published:
        parts: tuple[tuple[str, Callable[[Point], int]], ...] = (
            ("bar-published", lambda p: p.published),
        )
    else:
        parts = (("bar-handled", lambda p: p.handled), ("bar-failed", lambda p: p.failed))
    top = _nice_top(max((sum(get(p) for _, get in parts) for p in points), default=0))
    bars: list[Bar] = []
    for i, p in enumerate(points):
        base = 0
        for css, get in parts:
            value = get(p)
            if value:
                h = PLOT_H * value / top
                y = TOP + PLOT_H * (1 - (base + value) / top)
                x, w = round(LEFT + i * step_w, 1), round(max(step_w - 1, 0.5), 1)
                bars.append(Bar(x, w, round(y, 1), round(h, 1), css, _stamp(p.at),
                                value))  # fmt: skip
            base += value
    ticks = tuple((round(TOP + PLOT_H * (1 - f), 1), f"{round(top * f):,}") for f in (0, 0.5, 1))
    legend = (
        (("bar-published", "published"),)
        if published
        else (("bar-handled", "handled"), ("bar-failed", "failed"))
    )
    return Chart(chart_id, title, tuple(bars), (), ticks, _x_ticks(points, span), legend,
                 empty=not bars)  # fmt: skip


def _decades(values: Sequence[float]) -> tuple[int, int]:
    """The log axis: whole decades around the values, at least two of them."""
    if not values:
        return -1, 3  # 0.1 ms .. 1 s
    low = math.floor(math.log10(max(min(values), 0.01)))
    high = max(math.ceil(math.log10(max(values))), low + 2)
    return low, high


def _y_of(ms: float, low: int, high: int) -> float:
    clamped = min(max(ms, 10.0**low), 10.0**high)
    return TOP + PLOT_H * (1 - (math.log10(clamped) - low) / (high - low))


def duration_chart(
    chart_id: str,
    title: str,
    points: Sequence[Point],
    span: Span,
    pick: Callable[[Point, float], float | None],
) -> Chart:
    """p50, p95 and p99 of a duration per interval (`pick(point, q)`), on a log axis; an
    interval without samples breaks the line."""
    n = max(len(points), 1)
    step_w = PLOT_W / n
    picked = [[pick(p, q) for p in points] for q, _ in QUANTILES]
    low, high = _decades([ms for row in picked for ms in row if ms is not None])
    lines: list[Line] = []
    for (_, label), row in zip(QUANTILES, picked, strict=True):
        segments: list[list[str]] = [[]]
        for i, ms in enumerate(row):
            if ms is None:
                segments.append([])
                continue
            x, y = LEFT + (i + 0.5) * step_w, _y_of(ms, low, high)
            segments[-1].append(f"{'L' if segments[-1] else 'M'}{x:.1f},{y:.1f}")
        # A lone point (an interval between two empty ones) gets a short stroke to show.
        path = [" ".join(s) + (" h3" if len(s) == 1 else "") for s in segments if s]
        values = ",".join("" if ms is None else f"{ms:.3f}" for ms in row)
        lines.append(Line(f"line-{label}", label, " ".join(path), values))
    ticks = tuple(
        (round(_y_of(10.0**d, low, high), 1), format_ms(10.0**d)) for d in range(low, high + 1)
    )
    legend = tuple((f"line-{label}", label) for _, label in QUANTILES)
    empty = not any(line.path for line in lines)
    return Chart(chart_id, title, (), tuple(lines), ticks, _x_ticks(points, span), legend, empty)
