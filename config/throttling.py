"""Rate limits that hold under concurrency.

DRF's throttles read a request history from the cache, decide, then write it back: requests
arriving together all read the same history and all pass. This one counts with the cache's
atomic increment (Redis INCR), in a window that opens at a client's first request and lasts
the rate's period, so at most the rate gets through per window.
"""

from __future__ import annotations

import time

from rest_framework.throttling import ScopedRateThrottle


class CountingScopedRateThrottle(ScopedRateThrottle):
    """`ScopedRateThrottle`'s scopes and rates, counted atomically."""

    def timer(self) -> float:
        return time.time()  # looked up per call (DRF binds it at import), so tests can move it

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        opened = self.cache.get_or_set(f"{key}:opened", self.now, timeout=self.duration)
        self.window_ends_at = opened + self.duration
        return self._count(f"{key}:count") <= self.num_requests

    def _count(self, key: str) -> int:
        # add() creates the counter once, expiring with the window; incr() is atomic.
        self.cache.add(key, 0, timeout=self.duration)
        try:
            return self.cache.incr(key)
        except ValueError:  # the window closed between the two calls: a new one opens
            self.cache.add(key, 1, timeout=self.duration)
            return 1

    def wait(self) -> float:
        return max(1.0, self.window_ends_at - self.now)
