"""An honest wait: how long a generation usually takes, from our own completions.

The typical time is the median, over the last hour, of request-to-image times of avatars that
succeeded; it is computed at most every CACHE_SECONDS (in the shared cache), so a page polling
every second costs one cache read, not an aggregate.
"""

from __future__ import annotations

import logging
import statistics
from datetime import datetime, timedelta

import redis
from django.core.cache import cache
from django.db import connection
from django.db.models import DurationField, F
from django.utils import timezone

from avatars import breaker, pacing
from avatars.aggregates import Percentile
from avatars.models import Avatar

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
CACHE_KEY = "avatars:typical-seconds"
CACHE_SECONDS = 15
_NO_DATA = "none"  # what the cache holds when there was nothing to take a median of
MISSING = object()  # a serializer context without the typical time: read it then


def completed_in_last_hour(now: datetime | None = None):
    since = (now or timezone.now()) - WINDOW
    return Avatar.objects.filter(status=Avatar.Status.SUCCEEDED, completed_at__gte=since)


def _median_seconds() -> float | None:
    waited = F("completed_at") - F("created_at")
    if connection.vendor == "postgresql":
        median = completed_in_last_hour().aggregate(
            median=Percentile(waited, fraction=0.5, output_field=DurationField())
        )["median"]
        return None if median is None else median.total_seconds()
    rows = completed_in_last_hour().values_list("created_at", "completed_at")
    durations = [(done - created).total_seconds() for created, done in rows]
    return statistics.median(durations) if durations else None


def typical_seconds() -> float | None:
    """The median time from request to image over the last hour, or None without data."""
    try:
        cached = cache.get(CACHE_KEY)
    except redis.RedisError:
        cached = None
    if cached is not None:
        return None if cached == _NO_DATA else float(cached)
    median = _median_seconds()
    try:
        cache.set(CACHE_KEY, _NO_DATA if median is None else median, CACHE_SECONDS)
    except redis.RedisError:
        logger.warning("could not cache the typical generation time", exc_info=True)
    return median


def eta_seconds(avatar: Avatar, typical: float | None, now: datetime | None = None) -> int | None:
    """Seconds an unfinished avatar probably still needs: the typical time minus what it spent."""
    if avatar.is_terminal or typical is None:
        return None
    spent = ((now or timezone.now()) - avatar.created_at).total_seconds()
    return max(0, round(typical - spent))


def provider_status() -> str:
    """`unavailable` while the breaker is open, `degraded` while creates are slowed or Redis
    does not answer, else `ok`."""
    if breaker.current_state().open:
        return "unavailable"
    try:
        slowed = pacing.current_rate() < pacing.configured_rate()
    except redis.RedisError:
        return "degraded"
    return "degraded" if slowed else "ok"


def queue_length() -> int | None:
    try:
        return pacing.waiting_count()
    except redis.RedisError:
        return None
