"""The staff dashboard page, /admin/dashboard/: avatars/dashboard.py's figures drawn as SVG.

Linked from the admin index (templates/admin/index.html); `?range=48h` (per hour, the default)
or `?range=30d` (per day). Staff only: config/urls.py wraps the view in the admin's own check.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from avatars import charts, dashboard
from avatars.charts import Series
from avatars.models import Avatar, DashboardRollup

OUTCOMES = [
    (Avatar.Status.SUCCEEDED, "#2e7d32"),
    (Avatar.Status.FAILED, "#c62828"),
    (Avatar.Status.CANCELED, "#9e9e9e"),
]
PALETTE = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#795548"]
REASONS_SHOWN = len(PALETTE) - 1


def _labels(span: dashboard.Span, starts: list[datetime]) -> list[str]:
    if span.unit == DashboardRollup.Period.HOUR:
        return [f"{start:%b} {start.day} {start:%H}:00" for start in starts]
    return [f"{start:%b} {start.day}" for start in starts]


def _refund_series(periods: list[dashboard.Figures]) -> list[Series]:
    """The most frequent reasons each in a colour of their own, the rest as "other"."""
    ranked = [r for r, _ in sum((p.refunds for p in periods), Counter()).most_common()]
    shown = ranked if len(ranked) <= len(PALETTE) else ranked[:REASONS_SHOWN]
    series = [
        Series(reason, [p.refunds[reason] for p in periods], color)
        for reason, color in zip(shown, PALETTE, strict=False)
    ]
    if len(shown) < len(ranked):
        rest = [sum(p.refunds[r] for r in ranked[REASONS_SHOWN:]) for p in periods]
        series.append(Series("other", rest, PALETTE[-1]))
    return series


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def build_charts(board: dashboard.Dashboard) -> list[dict]:
    """Each panel's id, title, one-line summary and SVG."""
    labels, periods = _labels(board.span, board.starts), board.periods
    total = dashboard.totals(periods)
    ended = total.outcomes.total()
    outcome_series = [
        Series(status.label, [p.outcomes[status] for p in periods], color)
        for status, color in OUTCOMES
    ]
    waits = [
        Series("p50", [p.p50_seconds for p in periods], "#1565c0"),
        Series("p95", [p.p95_seconds for p in periods], "#ef6c00"),
    ]
    cost = Series("cost (USD)", [float(p.cost_usd) for p in periods], "#00838f")
    spent = Series("credits spent", [p.credits_spent for p in periods], "#6a1b9a")
    refunds = total.refunds.total()
    failed = total.outcomes[Avatar.Status.FAILED]
    panels = [
        ("outcomes", "Generations by outcome", f"{ended:,} ended, {_percent(failed, ended)} failed",
         charts.stacked_bars("Generations by outcome", labels, outcome_series)),
        ("waits", "Time from request to image (succeeded)", "p50 and p95 of each period",
         charts.lines("Time to an image", labels, waits, charts.format_seconds)),
        ("refunds", "Refunds by reason", f"{refunds:,} refunds decided",
         charts.stacked_bars("Refunds by reason", labels, _refund_series(periods))),
        ("cost", "Cost against credits spent",
         f"{charts.format_usd(float(total.cost_usd))} for {total.credits_spent:,} credits spent",
         charts.bars_and_line("Cost against credits spent", labels, cost, spent,
                              bar_format=charts.format_usd, line_format=charts.format_count)),
        ("errors", "Top error codes (failed generations)", f"{failed:,} failed",
         charts.ranking("Failed generations", board.top_errors(), "#c62828")),
    ]  # fmt: skip
    return [dict(zip(("id", "title", "summary", "svg"), panel, strict=True)) for panel in panels]


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Pictures of the last 48 hours or 30 days, for staff."""
    span_key = request.GET.get("range", dashboard.DEFAULT_SPAN)
    if span_key not in dashboard.SPANS:
        span_key = dashboard.DEFAULT_SPAN
    started = time.perf_counter()
    board = dashboard.collect_dashboard(span_key=span_key)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "board": board,
        "charts": build_charts(board),
        "spans": list(dashboard.SPANS.values()),
        "query_ms": (time.perf_counter() - started) * 1000,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
