"""An HTTP client for the control API, usable from any process (e.g. a Celery worker's tests)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

import httpx


class SimulatorControl:
    """Drives a running simulator through ``/_simulator/...``.

    Scenario helpers queue a behaviour for the next ``count`` matching predictions
    (outcome and webhook scenarios) or requests (``on=`` an endpoint name).
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.base_url}/_simulator", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Forget predictions, files, scenarios and logs; restore start-up config."""
        self._call("POST", "/reset")

    def config(self) -> dict[str, Any]:
        return self._call("GET", "/config")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at runtime (latency, retention, rate_limit, ...); returns them all."""
        if "webhook_retry_schedule" in changes:
            changes["webhook_retry_schedule"] = list(changes["webhook_retry_schedule"])
        return self._call("PATCH", "/config", json=changes)

    def set_rate_limit(
        self, rate_limit: int, *, window: float = 60.0, burst: int | None = None
    ) -> dict[str, Any]:
        """A token bucket of ``burst`` (default ``rate_limit``) refilled at ``rate_limit``
        per ``window`` seconds; starts full. Returns all settings."""
        return self.configure(
            rate_limit=rate_limit, rate_limit_window=window, rate_limit_burst=burst
        )

    def set_output_delay(self, seconds: float) -> dict[str, Any]:
        """Hold every ``/delivery/...`` output download ``seconds`` before answering."""
        return self.configure(output_delay=seconds)

    def set_cancel_after_minimum(self, seconds: float) -> dict[str, Any]:
        """The shortest ``Cancel-After`` deadline (Replicate: 5 s); lower it for fast tests."""
        return self.configure(cancel_after_minimum=seconds)

    def start_outage(self, seconds: float) -> dict[str, Any]:
        """Every ``/v1`` call answers 503 for ``seconds`` from now (replaces any outage)."""
        return self._call("POST", "/outage", json={"seconds": seconds})

    def end_outage(self) -> dict[str, Any]:
        """End the outage now (no-op if there is none)."""
        return self._call("DELETE", "/outage")

    def outage(self) -> dict[str, Any]:
        """``{"active": bool, "until": iso or None, "remaining": seconds}``."""
        return self._call("GET", "/outage")

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")["models"]

    def version_id(self, model: str = "openai/gpt-image-1") -> str:
        """The 64-hex version id the simulator gives ``model``."""
        return next(m["version"] for m in self.models() if m["model"] == model)

    def change_model_schema(
        self,
        model: str,
        *,
        drop: Iterable[str] = (),
        properties: dict[str, dict[str, Any]] | None = None,
        require: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Change what ``model`` serves as its schema and validates creates against.

        ``drop`` removes inputs, ``properties`` changes fields of inputs or adds new ones
        (``{"quality": {"enum": ["standard", "hd"]}}``), ``require`` makes inputs required.
        Returns ``{"model", "input"}`` (the new Input schema). A reset restores every model.
        """
        body = {"drop": list(drop), "properties": properties or {}, "require": list(require)}
        return self._call("PATCH", f"/models/{model}/schema", json=body)

    def restore_model_schema(self, model: str) -> dict[str, Any]:
        """Give ``model`` its built-in schema back."""
        return self._call("DELETE", f"/models/{model}/schema")

    def get_webhook_secret(self) -> str:
        return self._call("GET", "/webhook-secret")["key"]

    # -- logs -----------------------------------------------------------------------------

    def requests(
        self, *, since: int = 0, method: str | None = None, path: str | None = None
    ) -> list[dict[str, Any]]:
        """Requests received on the API (not the control API), oldest first."""
        entries = self._call("GET", "/requests", params={"since": since})["requests"]
        return [
            e
            for e in entries
            if (method is None or e["method"] == method.upper())
            and (path is None or e["path"] == path)
        ]

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def webhook_deliveries(
        self, *, since: int = 0, prediction_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every webhook delivery attempt (url, event, attempt, status_code, error, payload)."""
        entries = self._call("GET", "/webhooks", params={"since": since})["deliveries"]
        return [e for e in entries if prediction_id in (None, e["prediction_id"])]

    def predictions(self) -> list[dict[str, Any]]:
        """Internal view of every prediction, oldest first (includes applied scenarios)."""
        return self._call("GET", "/predictions")["predictions"]

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """Internal view of one prediction (scenarios, planned times, ``deadline``)."""
        return self._call("GET", f"/predictions/{prediction_id}")

    def files(self) -> dict[str, Any]:
        """``{"files": [...], "deletions": [...]}`` including deleted files."""
        return self._call("GET", "/files")

    def scenarios(self) -> list[dict[str, Any]]:
        """Scenarios still queued."""
        return self._call("GET", "/scenarios")["scenarios"]

    def clear_scenarios(self) -> None:
        self._call("DELETE", "/scenarios")

    # -- scenarios ------------------------------------------------------------------------

    def queue(
        self,
        kind: str,
        *,
        count: int = 1,
        on: str | None = None,
        model: str | None = None,
        prediction_id: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Queue any scenario kind; see the README for kinds and params."""
        body: dict[str, Any] = {"kind": kind, "count": count, "params": params}
        for name, value in (("on", on), ("model", model), ("prediction_id", prediction_id)):
            if value is not None:
                body[name] = value
        return self._call("POST", "/scenarios", json=body)

    def content_policy(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions fail with OpenAI's ``moderation_blocked`` refusal."""
        return self.queue("content_policy", count=count, **kw)

    def transient_failure(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions fail with Replicate's retryable ``E1000``."""
        return self.queue("transient_failure", count=count, **kw)

    def e6716(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions fail with ``E6716`` (director error)."""
        return self.queue("e6716", count=count, **kw)

    def fail(self, error: str, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions fail with a custom error text."""
        return self.queue("failure", count=count, error=error, **kw)

    def hang(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions never finish (until canceled)."""
        return self.queue("hang", count=count, **kw)

    def empty_output(self, count: int = 1, output: Any = (), **kw: Any) -> dict[str, Any]:
        """Next predictions succeed with an empty output (``[]`` or ``None``)."""
        value = list(output) if isinstance(output, tuple) else output
        return self.queue("empty_output", count=count, output=value, **kw)

    def expired_output(self, count: int = 1, mode: str = "files_gone", **kw: Any) -> dict[str, Any]:
        """Next predictions succeed but the output is already gone.

        ``files_gone``: output URLs are listed but answer 404; ``data_removed``:
        ``output`` is ``null`` and ``data_removed`` is true.
        """
        return self.queue("expired_output", count=count, mode=mode, **kw)

    def aborted(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions end ``aborted`` without starting."""
        return self.queue("aborted", count=count, **kw)

    def webhook_never(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions send no webhooks at all."""
        return self.queue("webhook_never", count=count, **kw)

    def webhook_twice(self, count: int = 1, **kw: Any) -> dict[str, Any]:
        """Next predictions deliver their final webhook twice (same ``webhook-id``)."""
        return self.queue("webhook_twice", count=count, **kw)

    def http_errors(
        self, status: int, count: int = 1, *, on: str = "create", **params: Any
    ) -> dict[str, Any]:
        """The next ``count`` requests to ``on`` answer ``status`` (429 with Retry-After)."""
        return self.queue("http_error", count=count, on=on, status=status, **params)

    def drop_connection(
        self, count: int = 1, *, on: str = "create", after_create: bool = False, **kw: Any
    ) -> dict[str, Any]:
        """Close the socket without answering; ``after_create`` processes the request first."""
        return self.queue("drop_connection", count=count, on=on, after_create=after_create, **kw)

    def delay(
        self, seconds: float, count: int = 1, *, on: str = "get", **kw: Any
    ) -> dict[str, Any]:
        """Hold the next requests to ``on`` for ``seconds`` before answering."""
        return self.queue("delay", count=count, on=on, seconds=seconds, **kw)

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SimulatorControlError(response.status_code, response.text)
        return response.json() if response.content else None


class SimulatorControlError(RuntimeError):
    """The control API rejected a call."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"simulator control API answered {status}: {body}")
        self.status = status
        self.body = body
