"""One background thread that runs timed callbacks (webhook sends, completion checks)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from .clock import Clock

logger = logging.getLogger(__name__)


class Scheduler:
    """A timer heap on wall-clock time; cheap for hundreds of pending predictions."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def schedule(self, due: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), action))
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sim-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_due(self) -> int:
        """Run every action that is due now; returns how many ran (for tests)."""
        ran = 0
        while (action := self._pop_due()) is not None:
            self._run_action(action)
            ran += 1
        return ran

    def _pop_due(self) -> Callable[[], None] | None:
        with self._cond:
            if self._heap and self._heap[0][0] <= self._clock.time():
                return heapq.heappop(self._heap)[2]
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        delay = self._heap[0][0] - self._clock.time()
                        if delay <= 0:
                            break
                        self._cond.wait(min(delay, 1.0))
                    else:
                        self._cond.wait(1.0)
                if self._stopping:
                    return
                action = heapq.heappop(self._heap)[2]
            self._run_action(action)

    @staticmethod
    def _run_action(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # a failing callback must not kill the timer thread
            logger.exception("scheduled action failed")
