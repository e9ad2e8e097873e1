"""Prometheus metrics at /metrics, for staff or a bearer token.

Web, worker and beat are separate processes, so nothing is counted in process memory: the
figures come from PostgreSQL (generations), Redis (Replicate calls, counted by the seam in every
process; queue depth) at scrape time.
"""

from __future__ import annotations

import hmac
import logging
import statistics

import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from avatars import breaker, pacing, waits
from avatars.models import Avatar
from avatars.shared_state import shared_redis

logger = logging.getLogger(__name__)

REPLICATE_CALLS_KEY = "avatars:metrics:replicate_calls"


def record_replicate_call(endpoint: str, outcome: str) -> None:
    """Count one call to Replicate; never let counting break the call itself."""
    try:
        shared_redis().hincrby(REPLICATE_CALLS_KEY, f"{endpoint}|{outcome}", 1)
    except redis.RedisError:
        logger.debug("could not count a Replicate call", exc_info=True)


class ServiceCollector:
    def collect(self):
        generations = CounterMetricFamily(
            "avatar_generations",
            "Avatars by status and error code",
            labels=["status", "error_code"],
        )
        rows = Avatar.objects.values("status", "error_code").annotate(n=Count("pk"))
        for row in rows.order_by("status", "error_code"):
            generations.add_metric([row["status"], row["error_code"]], row["n"])
        yield generations

        durations = _completion_seconds_last_hour()
        completion = GaugeMetricFamily(
            "avatar_completion_seconds",
            "Time from request to succeeded, avatars finished in the last hour",
            labels=["quantile"],
        )
        for quantile, value in _quantiles(durations).items():
            completion.add_metric([quantile], value)
        yield completion

        calls = CounterMetricFamily(
            "replicate_calls",
            "Calls to Replicate by endpoint and outcome",
            labels=["endpoint", "outcome"],
        )
        queue = GaugeMetricFamily("celery_queue_depth", "Messages waiting in the task queue")
        try:
            client = shared_redis()
            for key, value in sorted(client.hgetall(REPLICATE_CALLS_KEY).items()):
                endpoint, _, outcome = key.decode().partition("|")
                calls.add_metric([endpoint, outcome], int(value))
            queue.add_metric([], client.llen(settings.CELERY_TASK_DEFAULT_QUEUE))
        except redis.RedisError:
            logger.warning("metrics: Redis unreachable", exc_info=True)
        yield calls
        yield queue
        yield from _provider_gauges()


def _provider_gauges():
    """The breaker's state and the pace creates keep, shared by every process through Redis."""
    state = breaker.current_state()
    opened = GaugeMetricFamily("replicate_breaker_open", "1 while Replicate calls are held back")
    opened.add_metric([], 1 if state.open else 0)
    yield opened
    rate = GaugeMetricFamily(
        "replicate_create_rate_per_minute", "Creates a minute the account-wide pace allows now"
    )
    waiting = GaugeMetricFamily("avatar_create_queue", "Avatars waiting for a create slot")
    try:
        rate.add_metric([], pacing.current_rate() * 60)
        waiting.add_metric([], pacing.waiting_count())
    except redis.RedisError:
        logger.warning("metrics: Redis unreachable", exc_info=True)
    yield rate
    yield waiting


def _completion_seconds_last_hour() -> list[float]:
    rows = waits.completed_in_last_hour().values_list("created_at", "completed_at")
    return [(done - created).total_seconds() for created, done in rows]


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    if len(values) == 1:
        return {"0.5": values[0], "0.95": values[0], "0.99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"0.5": cuts[49], "0.95": cuts[94], "0.99": cuts[98]}


def _allowed(request: HttpRequest) -> bool:
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return JsonResponse(
            {
                "error": {
                    "code": "not_authenticated",
                    "message": "Staff or a token only.",
                    "fields": {},
                }
            },
            status=401,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
