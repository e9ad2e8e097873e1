"""The Redis that every web, worker and beat process shares for counters, pacing and the breaker."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def shared_redis() -> redis.Redis:
    return _client_for(settings.REDIS_URL)
