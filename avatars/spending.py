"""The daily spend cap: what today cost plus what is in flight, against the operator's limit.

Today is the UTC day. What is in flight is estimated from the configured model and quality
(`costs.estimate_avatar_cost`), since an unfinished avatar's cost is not known yet. The check
is not serialised across requests: submissions that arrive together may pass it together, so
the cap can be overshot by at most one estimate per concurrent submission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from avatars import costs
from avatars.generation import ACTIVE
from avatars.models import Avatar


@dataclass(frozen=True)
class DailySpend:
    limit: Decimal | None
    spent: Decimal
    in_flight: Decimal
    resets_at: datetime

    @property
    def total(self) -> Decimal:
        return self.spent + self.in_flight

    @property
    def share(self) -> float | None:
        """The part of the limit used, or None without a limit."""
        return None if self.limit is None else float(self.total / self.limit)

    @property
    def reached(self) -> bool:
        return self.limit is not None and self.total >= self.limit


def _limit() -> Decimal | None:
    limit = settings.AVATAR_DAILY_SPEND_LIMIT_USD
    return None if limit is None else Decimal(str(limit))


def measure_daily_spend(now: datetime | None = None) -> DailySpend:
    """Today's cost so far (ended avatars, and the ended attempts of unfinished ones) plus the
    estimated cost of every unfinished avatar."""
    now = now or timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ended = Avatar.objects.filter(completed_at__gte=midnight, completed_at__lte=now)
    spent = ended.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)
    active = Avatar.objects.filter(status__in=ACTIVE).aggregate(
        count=Count("pk"), spent=Sum("cost_usd")
    )
    estimate = costs.estimate_avatar_cost(settings.REPLICATE_MODEL, settings.AVATAR_IMAGE_QUALITY)
    return DailySpend(
        limit=_limit(),
        spent=spent + (active["spent"] or Decimal(0)),
        in_flight=estimate * active["count"],
        resets_at=midnight + timedelta(days=1),
    )


def check_spend_cap(now: datetime | None = None) -> DailySpend | None:
    """The day's spend when the cap is reached (no new submission may start), else None."""
    if settings.AVATAR_DAILY_SPEND_LIMIT_USD is None:
        return None
    spend = measure_daily_spend(now)
    return spend if spend.reached else None
