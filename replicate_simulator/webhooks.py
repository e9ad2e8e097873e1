"""Signed webhook deliveries with Replicate's retry rules (only the final event is retried)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx

from .clock import Clock
from .ids import isoformat, new_webhook_message_id
from .reqlog import EventLog
from .scheduling import Scheduler
from .signing import sign

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One webhook message; retries and duplicates reuse its id and body."""

    prediction_id: str
    url: str
    event: str
    body: bytes
    message_id: str
    generation: int
    retry: bool
    attempt: int = 1
    duplicate: bool = False


class WebhookSender:
    """Sends deliveries from a small thread pool and schedules retries on the scheduler."""

    def __init__(
        self,
        *,
        clock: Clock,
        scheduler: Scheduler,
        log: EventLog,
        secret: Callable[[], str],
        retry_schedule: Callable[[], tuple[float, ...]],
        timeout: Callable[[], float],
        is_current: Callable[[int], bool],
        workers: int = 8,
    ) -> None:
        self._clock = clock
        self._scheduler = scheduler
        self._log = log
        self._secret = secret
        self._retry_schedule = retry_schedule
        self._timeout = timeout
        self._is_current = is_current
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-webhook")
        self._http = httpx.Client(follow_redirects=False)
        self._closed = threading.Event()

    def send(
        self,
        *,
        prediction_id: str,
        url: str,
        event: str,
        payload: dict[str, Any],
        generation: int,
        retry: bool,
        copies: int = 1,
    ) -> None:
        """Queue a new message (``copies`` > 1 delivers the same message again afterwards)."""
        delivery = Delivery(
            prediction_id=prediction_id,
            url=url,
            event=event,
            body=json.dumps(payload, separators=(",", ":")).encode(),
            message_id=new_webhook_message_id(),
            generation=generation,
            retry=retry,
        )
        self._submit(delivery, copies)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def _submit(self, delivery: Delivery, copies: int) -> None:
        if self._closed.is_set() or not self._is_current(delivery.generation):
            return
        try:
            self._pool.submit(self._deliver, delivery, copies)
        except RuntimeError:  # pool shut down while stopping
            pass

    def _deliver(self, delivery: Delivery, copies: int) -> None:
        if self._closed.is_set() or not self._is_current(delivery.generation):
            return
        status, error = self._post(delivery)
        if self._is_current(delivery.generation):
            self._log.append(
                {
                    "time": isoformat(self._clock.time()),
                    "prediction_id": delivery.prediction_id,
                    "url": delivery.url,
                    "event": delivery.event,
                    "attempt": delivery.attempt,
                    "duplicate": delivery.duplicate,
                    "webhook_id": delivery.message_id,
                    "status_code": status,
                    "error": error,
                    "payload": json.loads(delivery.body),
                }
            )
        ok = status is not None and 200 <= status < 300
        schedule = self._retry_schedule()
        if not ok and delivery.retry and delivery.attempt <= len(schedule):
            retry = replace(delivery, attempt=delivery.attempt + 1)
            due = self._clock.time() + schedule[delivery.attempt - 1]
            self._scheduler.schedule(due, lambda: self._submit(retry, copies))
        elif copies > 1:
            self._submit(replace(delivery, attempt=1, duplicate=True), copies - 1)

    def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        timestamp = int(self._clock.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Webhook/1.0 (replicate-simulator)",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(
                self._secret(), delivery.message_id, timestamp, delivery.body
            ),
        }
        try:
            response = self._http.post(
                delivery.url, content=delivery.body, headers=headers, timeout=self._timeout()
            )
            return response.status_code, None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
