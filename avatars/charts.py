"""Server-rendered SVG charts for the staff dashboard: no JavaScript, no build step, no CDN.

Each public function turns series into one `<svg>` with axes, a legend and a `<title>` on every
bar and point (the browser shows it as a tooltip). Every text is escaped, so the result is safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 10, 26
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
X_LABELS = 8
ROW_H, LABEL_W = 26, 190
# The cost bars' axis top is this much above their highest bar (bars_and_line).
BARS_UNDER_LINE = 1.6


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]
    color: str


Format = Callable[[float], str]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_usd(value: float) -> str:
    whole = value >= 100 or float(value).is_integer()
    return f"${value:,.0f}" if whole else f"${value:,.2f}"


def format_seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 10 or value == 0 else f"{value:.1f} s"


def nice_top(maximum: float, ticks: int = 4) -> tuple[float, float]:
    """A round axis top at or above `maximum`, and the step between its `ticks` or fewer
    gridlines."""
    if maximum <= 0:
        return 1.0, 0.25
    raw = maximum / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(maximum / step - 1e-9), step


def _scale(maximum: float, fmt: Format) -> tuple[float, float]:
    """The axis for values up to `maximum`; counts go up in whole steps."""
    return nice_top(max(maximum, 4) if fmt is format_count else maximum)


def _figure(
    title: str, parts: list[str], legend: Sequence[Series] = (), height: int = HEIGHT
) -> SafeString:
    """The SVG, after an HTML legend (it wraps where the SVG's text would not)."""
    label = escape(title)
    keys = "".join(
        f'<li><span class="swatch" style="background:{one.color}"></span>{escape(one.label)}</li>'
        for one in legend
    )
    keys = f'<ul class="legend">{keys}</ul>' if keys else ""
    return mark_safe(  # every text inside went through escape()
        f'<figure class="chart-figure">{keys}'
        f'<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{label}</title>{"".join(parts)}</svg></figure>'
    )


def _y(value: float, top: float) -> float:
    return TOP + PLOT_H - PLOT_H * value / top


def _y_axis(top: float, step: float, fmt: Format, *, right: bool = False) -> list[str]:
    """Tick labels on one side; the left axis draws the gridlines too."""
    parts = [f'<g class="axis {"right" if right else "left"}">']
    for i in range(round(top / step) + 1):
        y = _y(i * step, top)
        if not right:
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}">'
                "</line>"
            )
        x = LEFT + PLOT_W + 6 if right else LEFT - 6
        parts.append(f'<text x="{x}" y="{y + 4:.1f}">{escape(fmt(i * step))}</text>')
    return [*parts, "</g>"]


def _band(labels: Sequence[str]) -> float:
    return PLOT_W / max(len(labels), 1)


def _x_axis(labels: Sequence[str]) -> list[str]:
    every, band, bottom = max(1, math.ceil(len(labels) / X_LABELS)), _band(labels), TOP + PLOT_H
    parts = [
        f'<g class="axis bottom"><line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{bottom}" '
        f'y2="{bottom}"></line>'
    ]
    for i in range(0, len(labels), every):
        x = LEFT + band * (i + 0.5)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}">{escape(labels[i])}</text>')
    return [*parts, "</g>"]


def _no_data(series: Sequence[Series]) -> list[str]:
    if any(value for one in series for value in one.values):
        return []
    x, y = LEFT + PLOT_W / 2, TOP + PLOT_H / 2
    return [f'<text class="empty" x="{x:.0f}" y="{y:.0f}">No data in this range</text>']


def _tip(label: str, one: Series, value: float, fmt: Format) -> str:
    return f"<title>{escape(label)}: {escape(one.label)} {escape(fmt(value))}</title>"


def _bars(labels: Sequence[str], series: Sequence[Series], top: float, fmt: Format) -> list[str]:
    """One bar per label, its series stacked bottom up in the order given."""
    band = _band(labels)
    parts = ['<g class="bars">']
    for i, label in enumerate(labels):
        base = 0.0
        for one in series:
            value = one.values[i] or 0
            if value <= 0:
                continue
            low, high = _y(base, top), _y(base + value, top)
            parts.append(
                f'<rect class="bar" data-series="{escape(one.label)}" '
                f'x="{LEFT + band * (i + 0.1):.1f}" y="{high:.1f}" width="{band * 0.8:.1f}" '
                f'height="{max(low - high, 0.5):.1f}" fill="{one.color}">'
                f"{_tip(label, one, value, fmt)}</rect>"
            )
            base += value
    return [*parts, "</g>"]


def _line(labels: Sequence[str], one: Series, top: float, fmt: Format) -> list[str]:
    """A line through the values there are (a gap where one is None), a dot on each."""
    band = _band(labels)
    runs: list[list[str]] = [[]]
    dots = []
    for i, (label, value) in enumerate(zip(labels, one.values, strict=True)):
        if value is None:
            runs.append([])
            continue
        x, y = LEFT + band * (i + 0.5), _y(value, top)
        runs[-1].append(f"{x:.1f},{y:.1f}")
        dots.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{one.color}">'
            f"{_tip(label, one, value, fmt)}</circle>"
        )
    lines = [
        f'<polyline fill="none" stroke="{one.color}" stroke-width="2" points="{" ".join(run)}">'
        "</polyline>"
        for run in runs
        if run
    ]
    return [f'<g class="line" data-series="{escape(one.label)}">', *lines, *dots, "</g>"]


def _highest(series: Sequence[Series], *, stacked: bool) -> float:
    columns = zip(*(one.values for one in series), strict=True)
    if stacked:
        return max((sum(v or 0 for v in column) for column in columns), default=0)
    return max((v for column in columns for v in column if v is not None), default=0)


def stacked_bars(
    title: str, labels: Sequence[str], series: Sequence[Series], fmt: Format = format_count
) -> SafeString:
    """Bars per period, each split by series (outcomes, reasons)."""
    top, step = _scale(_highest(series, stacked=True), fmt)
    parts = [*_y_axis(top, step, fmt), *_x_axis(labels), *_bars(labels, series, top, fmt)]
    return _figure(title, [*parts, *_no_data(series)], series)


def lines(
    title: str, labels: Sequence[str], series: Sequence[Series], fmt: Format = format_count
) -> SafeString:
    """One line per series on a shared axis (percentiles)."""
    top, step = _scale(_highest(series, stacked=False), fmt)
    parts = [*_y_axis(top, step, fmt), *_x_axis(labels)]
    for one in series:
        parts += _line(labels, one, top, fmt)
    return _figure(title, [*parts, *_no_data(series)], series)


def bars_and_line(
    title: str,
    labels: Sequence[str],
    bars: Series,
    line: Series,
    *,
    bar_format: Format,
    line_format: Format,
) -> SafeString:
    """Bars on the left axis against a line on the right one (money against credits). The bars'
    axis reaches higher, so they stay in the lower part and the line above them."""
    bar_top, bar_step = _scale(_highest([bars], stacked=True) * BARS_UNDER_LINE, bar_format)
    line_top, line_step = _scale(_highest([line], stacked=False), line_format)
    parts = [
        *_y_axis(bar_top, bar_step, bar_format),
        *_y_axis(line_top, line_step, line_format, right=True),
        *_x_axis(labels),
        *_bars(labels, [bars], bar_top, bar_format),
        *_line(labels, line, line_top, line_format),
    ]
    return _figure(title, [*parts, *_no_data([bars, line])], [bars, line])


def ranking(
    title: str, items: Sequence[tuple[str, float]], color: str, fmt: Format = format_count
) -> SafeString:
    """Horizontal bars, largest first (top error codes)."""
    top = max((value for _, value in items), default=0) or 1
    width = WIDTH - LABEL_W - RIGHT
    parts = ['<g class="bars">']
    for i, (label, value) in enumerate(items):
        y, one = TOP + ROW_H * i, Series(label, [value], color)
        parts.append(
            f'<text class="row-label" x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.0f}">'
            f"{escape(label)}</text>"
            f'<rect class="bar" data-series="{escape(label)}" x="{LABEL_W}" y="{y + 4}" '
            f'width="{max(width * value / top, 0.5):.1f}" height="{ROW_H - 8}" fill="{color}">'
            f"{_tip(title, one, value, fmt)}</rect>"
            f'<text class="value" x="{LABEL_W + width * value / top + 6:.1f}" '
            f'y="{y + ROW_H / 2 + 4:.0f}">{escape(fmt(value))}</text>'
        )
    if not items:
        parts.append(f'<text class="empty" x="{WIDTH / 2:.0f}" y="{TOP + 16}">None</text>')
    return _figure(title, [*parts, "</g>"], height=TOP + ROW_H * max(len(items), 1) + 8)
