"""The staff dashboard's figures: per hour for the last 48 hours, per day for the last 30 days.

Each period (an hour or a day) gets: generations by outcome and the cost of them, the p50 and
p95 time from request to image, the error codes of the failures (all by the moment the avatar
ended); the credits spent (by the ledger's spends); the refunds by reason (by the moment the
refund was decided; the reason is the compensation's: the error code it refunded, or
`goodwill`).

A million avatars make aggregates over 30 days take seconds, so each period that is over is
computed once and kept in `DashboardRollup`. That is exact, not a cache: every figure is counted
at a moment that only ever is "now" when it is written (`completed_at`, the spend's and the
decision's time), so once a period has ended and `SETTLE` has passed for transactions under way
to commit, nothing can enter it. A page then aggregates only the periods not yet kept (the
current one, or everything on the first visit) and reads the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, F, QuerySet, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from avatars import breaker, pacing
from avatars.aggregates import Percentile
from avatars.models import Alert, Avatar, DashboardRollup
from credits.models import Compensation, LedgerEntry

# Longer than any transaction that stamps a moment can take to commit (tasks end within
# CELERY_TASK_TIME_LIMIT), so a period this far behind us is final.
SETTLE = timedelta(minutes=10)
OPEN_ALERTS_SHOWN = 20
ENDED = [Avatar.Status.SUCCEEDED, Avatar.Status.FAILED, Avatar.Status.CANCELED]


@dataclass(frozen=True)
class Span:
    key: str
    label: str
    unit: str  # a DashboardRollup.Period
    count: int

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.unit == DashboardRollup.Period.HOUR else timedelta(days=1)


SPANS = {
    "48h": Span("48h", "Last 48 hours, per hour", DashboardRollup.Period.HOUR, 48),
    "30d": Span("30d", "Last 30 days, per day", DashboardRollup.Period.DAY, 30),
}
DEFAULT_SPAN = "48h"


@dataclass
class Figures:
    """One period's figures; durations in seconds, None when nothing succeeded in it."""

    outcomes: Counter = field(default_factory=Counter)
    cost_usd: Decimal = Decimal(0)
    credits_spent: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    refunds: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {
            "outcomes": dict(self.outcomes),
            "cost_usd": str(self.cost_usd),
            "credits_spent": self.credits_spent,
            "p50_seconds": self.p50_seconds,
            "p95_seconds": self.p95_seconds,
            "refunds": dict(self.refunds),
            "errors": dict(self.errors),
        }

    @classmethod
    def from_json(cls, data: dict) -> Figures:
        return cls(
            outcomes=Counter(data["outcomes"]),
            cost_usd=Decimal(data["cost_usd"]),
            credits_spent=data["credits_spent"],
            p50_seconds=data["p50_seconds"],
            p95_seconds=data["p95_seconds"],
            refunds=Counter(data["refunds"]),
            errors=Counter(data["errors"]),
        )


@dataclass(frozen=True)
class ProviderState:
    """The breaker, the create pace and the queue now; None where Redis did not answer."""

    breaker_open: bool
    opened_at: datetime | None
    retry_at: datetime | None
    rate_per_minute: float | None
    max_rate_per_minute: float
    waiting: int | None
    in_flight: int


@dataclass(frozen=True)
class Dashboard:
    span: Span
    starts: list[datetime]
    periods: list[Figures]
    alerts: list[Alert]
    provider: ProviderState

    def top_errors(self, limit: int = 8) -> list[tuple[str, int]]:
        return sum((p.errors for p in self.periods), Counter()).most_common(limit)


def floor_to(moment: datetime, unit: str) -> datetime:
    """The start of the hour or (UTC) day `moment` falls in."""
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if unit == DashboardRollup.Period.DAY else moment


def period_starts(span: Span, now: datetime) -> list[datetime]:
    last = floor_to(now, span.unit)
    return [last - span.step * back for back in range(span.count - 1, -1, -1)]


def _grouped(queryset: QuerySet, moment: str, unit: str, since: datetime, *by: str, **sums):
    """Rows of `sums` per period of `moment` (and per `by`), for moments from `since` on."""
    return (
        queryset.filter(**{f"{moment}__gte": since})
        .annotate(period=Trunc(moment, unit, tzinfo=UTC))
        .values("period", *by)
        .annotate(**sums)
        .order_by()
    )


def compute_figures(*, unit: str, since: datetime) -> dict[datetime, Figures]:
    """Every period's figures from `since` on, straight from the tables (four queries)."""
    figures: dict[datetime, Figures] = {}

    def at(period: datetime) -> Figures:
        return figures.setdefault(period, Figures())

    for add in (_add_outcomes, _add_durations, _add_spends, _add_refunds):
        add(at, unit, since)
    return figures


def _add_outcomes(at, unit: str, since: datetime) -> None:
    """How generations ended, what they cost, and the codes of those that failed."""
    ended = Avatar.objects.filter(status__in=ENDED)
    by = ("status", "error_code")
    for row in _grouped(
        ended, "completed_at", unit, since, *by, n=Count("pk"), cost=Sum("cost_usd")
    ):
        period = at(row["period"])
        period.outcomes[row["status"]] += row["n"]
        period.cost_usd += row["cost"]
        if row["status"] == Avatar.Status.FAILED and row["error_code"]:
            period.errors[row["error_code"]] += row["n"]


def _add_durations(at, unit: str, since: datetime) -> None:
    """p50 and p95 of request-to-image time: the wait a person sees, queueing included."""
    if connection.vendor != "postgresql":
        return  # percentile_cont is PostgreSQL's; a SQLite `make run` shows the panel empty
    waited = F("completed_at") - F("created_at")
    succeeded = Avatar.objects.filter(status=Avatar.Status.SUCCEEDED)
    for row in _grouped(
        succeeded,
        "completed_at",
        unit,
        since,
        p50=Percentile(waited, fraction=0.5, output_field=DurationField()),
        p95=Percentile(waited, fraction=0.95, output_field=DurationField()),
    ):
        period = at(row["period"])
        period.p50_seconds = row["p50"].total_seconds()
        period.p95_seconds = row["p95"].total_seconds()


def _add_spends(at, unit: str, since: datetime) -> None:
    spends = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND)
    for row in _grouped(spends, "created_at", unit, since, credits=Sum("amount")):
        at(row["period"]).credits_spent -= row["credits"]


def _add_refunds(at, unit: str, since: datetime) -> None:
    refunded = Compensation.objects.filter(status=Compensation.Status.REFUNDED)
    for row in _grouped(refunded, "decided_at", unit, since, "reason", n=Count("pk")):
        at(row["period"]).refunds[row["reason"]] += row["n"]


def figures_for(span: Span, now: datetime) -> tuple[list[datetime], list[Figures]]:
    """The span's periods: those kept in the rollup read, the others computed (and the ended
    ones among them kept)."""
    starts = period_starts(span, now)
    settled_before = floor_to(now - SETTLE, span.unit)
    kept = {
        row.start: Figures.from_json(row.figures)
        for row in DashboardRollup.objects.filter(
            period=span.unit, start__gte=starts[0], start__lt=settled_before
        )
    }
    missing = [start for start in starts if start < settled_before and start not in kept]
    fresh = compute_figures(unit=span.unit, since=missing[0] if missing else settled_before)
    DashboardRollup.objects.bulk_create(
        [
            DashboardRollup(
                period=span.unit, start=start, figures=fresh.get(start, Figures()).to_json()
            )
            for start in missing
        ],
        ignore_conflicts=True,  # another request kept it meanwhile: the same figures
    )
    return starts, [kept.get(start) or fresh.get(start) or Figures() for start in starts]


def read_provider_state() -> ProviderState:
    state = breaker.current_state()
    try:
        rate, waiting = pacing.current_rate() * 60, pacing.waiting_count()
    except redis.RedisError:
        rate = waiting = None
    return ProviderState(
        breaker_open=state.open,
        opened_at=state.opened_at,
        retry_at=state.retry_at,
        rate_per_minute=rate,
        max_rate_per_minute=settings.REPLICATE_CREATES_PER_MINUTE,
        waiting=waiting,
        in_flight=Avatar.objects.filter(
            status__in=[Avatar.Status.QUEUED, Avatar.Status.RUNNING]
        ).count(),
    )


def open_alerts() -> list[Alert]:
    """Open alerts, critical first (the choices sort so), the latest first within each."""
    return list(
        Alert.objects.filter(resolved_at__isnull=True).order_by("severity", "-last_seen_at")[
            :OPEN_ALERTS_SHOWN
        ]
    )


def collect_dashboard(*, span_key: str, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard page draws, for `span_key` (a key of SPANS)."""
    span = SPANS[span_key]
    starts, periods = figures_for(span, now or timezone.now())
    return Dashboard(
        span=span,
        starts=starts,
        periods=periods,
        alerts=open_alerts(),
        provider=read_provider_state(),
    )


def totals(periods: Iterable[Figures]) -> Figures:
    """The span's sums (not its percentiles: those do not add up)."""
    total = Figures()
    for period in periods:
        total.outcomes += period.outcomes
        total.cost_usd += period.cost_usd
        total.credits_spent += period.credits_spent
        total.refunds += period.refunds
        total.errors += period.errors
    return total
