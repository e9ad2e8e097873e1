"""Queued test behaviours ("the next N matching requests/predictions do X")."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

# Behaviours chosen when a prediction is created; they decide how it ends.
OUTCOME_KINDS = frozenset(
    {
        "content_policy",
        "transient_failure",
        "e6716",
        "failure",
        "hang",
        "empty_output",
        "expired_output",
        "aborted",
    }
)
# Behaviours of a prediction's webhooks.
WEBHOOK_KINDS = frozenset({"webhook_never", "webhook_twice"})
# Behaviours of a single HTTP request.
HTTP_KINDS = frozenset({"http_error", "drop_connection", "delay"})
KINDS = OUTCOME_KINDS | WEBHOOK_KINDS | HTTP_KINDS

# Endpoint names a request scenario can target with ``on``.
ENDPOINTS = frozenset(
    {
        "create",
        "get",
        "list",
        "cancel",
        "file_create",
        "file_get",
        "file_list",
        "file_delete",
        "file_download",
        "output",
        "webhook_secret",
        "model_get",
        "any",
    }
)


class ScenarioError(ValueError):
    """A scenario request is malformed."""


@dataclass
class Scenario:
    """One queued behaviour and how many more times it applies."""

    id: int
    kind: str
    remaining: int
    on: str | None = None
    model: str | None = None
    prediction_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "remaining": self.remaining,
            "on": self.on,
            "model": self.model,
            "prediction_id": self.prediction_id,
            "params": self.params,
        }


def parse_scenario(data: Any, scenario_id: int) -> Scenario:
    """Build a scenario from its JSON description, checking every field."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario must be a JSON object")
    unknown = set(data) - {"kind", "count", "on", "model", "prediction_id", "params"}
    if unknown:
        raise ScenarioError(f"unknown scenario field(s): {', '.join(sorted(unknown))}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ScenarioError(f"kind must be one of: {', '.join(sorted(KINDS))}")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ScenarioError("count must be an integer >= 1")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ScenarioError("params must be an object")
    on = data.get("on")
    if kind in HTTP_KINDS:
        on = on or "create"
        if on not in ENDPOINTS:
            raise ScenarioError(f"on must be one of: {', '.join(sorted(ENDPOINTS))}")
    elif on is not None:
        raise ScenarioError("on applies only to http_error, drop_connection and delay")
    _check_params(kind, params)
    return Scenario(
        id=scenario_id,
        kind=kind,
        remaining=count,
        on=on,
        model=data.get("model"),
        prediction_id=data.get("prediction_id"),
        params=params,
    )


def _check_params(kind: str, params: dict[str, Any]) -> None:
    if kind == "http_error":
        status = params.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ScenarioError("http_error needs params.status between 400 and 599")
    if kind == "delay":
        seconds = params.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ScenarioError("delay needs params.seconds >= 0")
    if kind == "failure" and not isinstance(params.get("error"), str):
        raise ScenarioError("failure needs params.error (the error text)")
    if kind == "expired_output" and params.get("mode", "files_gone") not in (
        "files_gone",
        "data_removed",
    ):
        raise ScenarioError("expired_output params.mode must be files_gone or data_removed")


class ScenarioQueue:
    """FIFO of scenarios; each match consumes one use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Scenario] = []
        self._ids = itertools.count(1)

    def add(self, data: Any) -> Scenario:
        with self._lock:
            scenario = parse_scenario(data, next(self._ids))
            self._items.append(scenario)
            return scenario

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.to_dict() for s in self._items]

    def take_request(self, endpoint: str, prediction_id: str | None) -> Scenario | None:
        """The first request scenario that matches this endpoint call, consumed once."""
        return self._take(
            lambda s: s.kind in HTTP_KINDS
            and s.on in (endpoint, "any")
            and (s.prediction_id is None or s.prediction_id == prediction_id)
        )

    def take_prediction(self, kinds: frozenset[str], model: str) -> Scenario | None:
        """The first prediction scenario of ``kinds`` for ``model``, consumed once."""
        return self._take(lambda s: s.kind in kinds and s.model in (None, model))

    def _take(self, matches: Any) -> Scenario | None:
        with self._lock:
            for scenario in self._items:
                if matches(scenario):
                    scenario.remaining -= 1
                    if scenario.remaining <= 0:
                        self._items.remove(scenario)
                    return scenario
        return None
