"""Sliding-window rate limit on prediction creates (Replicate: 600 per minute)."""

from __future__ import annotations

import math
import threading
from collections import deque

from .clock import Clock


class SlidingWindowLimiter:
    """Counts accepted requests in the last ``window`` seconds."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stamps: deque[float] = deque()

    def acquire(self, limit: int, window: float) -> int | None:
        """Take a slot; if none is free, the whole seconds until one is (at least 1)."""
        now = self._clock.monotonic()
        with self._lock:
            while self._stamps and self._stamps[0] <= now - window:
                self._stamps.popleft()
            if len(self._stamps) >= limit:
                return max(1, math.ceil(self._stamps[0] + window - now))
            self._stamps.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()
