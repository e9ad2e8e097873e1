"""Time sources, injectable so lifecycle logic can be tested without waiting."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the simulator needs to know about time."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (used for timestamps and lifecycles)."""

    def monotonic(self) -> float:
        """Monotonic seconds (used for rate limiting and waiting)."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to, for unit tests."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        with self._lock:
            self._wall += seconds
            self._mono += seconds
