"""Token-bucket rate limit on prediction creates (Replicate: 600 per minute, bursts allowed)."""

from __future__ import annotations

import math
import threading

from .clock import Clock


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per ``window`` seconds.

    A bucket rather than a sliding window: a client that keeps to the average rate is
    never throttled, and one that bursts learns the short wait until the next token,
    which is what an account limit with a burst allowance looks like from outside.
    Time is the clock's monotonic time, so a :class:`~.clock.FakeClock` drives it in tests.
    """

    def __init__(self, clock: Clock, rate: int, window: float, capacity: int | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.configure(rate, window, capacity)

    def configure(self, rate: int, window: float, capacity: int | None = None) -> None:
        """New limits, and a full bucket at the new capacity (``None``: equal to ``rate``)."""
        with self._lock:
            self._rate = rate
            self._window = window
            self._capacity = float(capacity if capacity is not None else rate)
            self._tokens = self._capacity
            self._stamp = self._clock.monotonic()

    def acquire(self) -> int | None:
        """Take a token; without a whole one, the whole seconds until there is one (at least 1)."""
        with self._lock:
            if self._window <= 0:  # no window: an unlimited refill rate
                return None
            per_second = self._rate / self._window
            now = self._clock.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * per_second)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return None
            return max(1, math.ceil((1 - self._tokens) / per_second))

    def tokens(self) -> float:
        """Tokens available now (for tests)."""
        with self._lock:
            if self._window <= 0:
                return self._capacity
            elapsed = self._clock.monotonic() - self._stamp
            return min(self._capacity, self._tokens + elapsed * self._rate / self._window)
