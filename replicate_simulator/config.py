"""Runtime settings of the simulator; every delay is a setting so tests run at small scale."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Replicate retries the final webhook on an exponential backoff for about a minute.
DEFAULT_WEBHOOK_RETRY_SCHEDULE: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class ConfigError(ValueError):
    """A setting has a value the simulator cannot use."""


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings that can be changed at start-up and at runtime (``/_simulator/config``).

    ``latency`` is the time from create to completion; ``start_delay`` is how long a
    prediction stays ``starting`` (``None``: 10% of the latency, at most 2 s).
    ``token`` set means only that Bearer token is accepted; ``None`` accepts any.
    ``delivery_base_url`` ``None`` means output files are served from the API's base URL.
    ``rate_limit`` creates per ``rate_limit_window`` seconds refill a bucket of
    ``rate_limit_burst`` tokens (``None``: ``rate_limit``, i.e. the whole allowance at once).
    ``output_delay`` holds every output-file download that long (a slow CDN).
    ``cancel_after_minimum`` is the shortest ``Cancel-After`` deadline (Replicate: 5 s).
    """

    latency: float = 10.0
    start_delay: float | None = None
    retention: float = 3600.0
    file_retention: float = 86400.0
    rate_limit: int = 600
    rate_limit_window: float = 60.0
    rate_limit_burst: int | None = None
    webhook_retry_schedule: tuple[float, ...] = field(
        default_factory=lambda: DEFAULT_WEBHOOK_RETRY_SCHEDULE
    )
    webhook_timeout: float = 5.0
    page_size: int = 100
    max_wait: float = 60.0
    token: str | None = None
    delivery_base_url: str | None = None
    output_delay: float = 0.0
    cancel_after_minimum: float = 5.0

    def __post_init__(self) -> None:
        for name in (
            "latency",
            "retention",
            "file_retention",
            "webhook_timeout",
            "max_wait",
            "output_delay",
            "cancel_after_minimum",
        ):
            _require_non_negative(name, getattr(self, name))
        if self.start_delay is not None:
            _require_non_negative("start_delay", self.start_delay)
        _require_non_negative("rate_limit_window", self.rate_limit_window)
        if not isinstance(self.rate_limit, int) or self.rate_limit < 1:
            raise ConfigError("rate_limit must be an integer >= 1")
        burst = self.rate_limit_burst
        if burst is not None and (
            not isinstance(burst, int) or isinstance(burst, bool) or burst < 1
        ):
            raise ConfigError("rate_limit_burst must be an integer >= 1 or null")
        if not isinstance(self.page_size, int) or self.page_size < 1:
            raise ConfigError("page_size must be an integer >= 1")
        schedule = tuple(self.webhook_retry_schedule)
        for delay in schedule:
            _require_non_negative("webhook_retry_schedule item", delay)
        object.__setattr__(self, "webhook_retry_schedule", tuple(float(d) for d in schedule))
        if self.token is not None and not str(self.token).strip():
            raise ConfigError("token must be non-empty when set")
        if self.delivery_base_url is not None:
            object.__setattr__(self, "delivery_base_url", self.delivery_base_url.rstrip("/"))

    def effective_start_delay(self) -> float:
        """How long a new prediction stays ``starting``."""
        if self.start_delay is not None:
            return min(self.start_delay, self.latency)
        return min(2.0, self.latency * 0.1)

    def updated(self, changes: dict[str, Any]) -> SimulatorConfig:
        """A copy with ``changes`` applied; unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        data = dataclasses.asdict(self)
        data["webhook_retry_schedule"] = list(self.webhook_retry_schedule)
        return data


def _require_non_negative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0")
