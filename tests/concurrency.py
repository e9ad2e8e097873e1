"""Run one function from many threads at once, each with its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections


def run_concurrently(fn: Callable[[int], Any], times: int, timeout: float = 60) -> list[Any]:
    """Call fn(i) for i in range(times) in parallel threads released together by a barrier.

    Returns each call's result or the exception it raised, in call order.
    """
    barrier = threading.Barrier(times)

    def call(i: int) -> Any:
        try:
            barrier.wait(timeout=timeout)
            return fn(i)
        except Exception as exc:  # the caller asserts on what each thread got
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=times) as pool:
        return list(pool.map(call, range(times), timeout=timeout))
