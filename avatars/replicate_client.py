"""The one seam to Replicate. Nothing else imports `replicate` or talks HTTP to it.

Every vendor failure leaves this module as a `ReplicateCallError` that says whether trying
again can help, so callers decide on retries without knowing Replicate's or httpx's errors.

Deliberate choices about the client (replicate 1.0.7):
- Its transport retries GETs on 429/503/504 up to 10 times with blocking sleeps. We mount a
  plain transport over it (`mounts`), so a call is one HTTP request and retries are ours:
  countdowns in Celery, never sleeps inside a worker.
- `files.create` sends `timeout=None`; our transport replaces missing timeouts with ours.
- The client's Prediction model can not parse `status: aborted` (pydantic fails) and drops
  `data_removed` and `webhook`, and its create can not send headers (`Cancel-After`) nor show
  them (`Retry-After`). Creates, reads and cancels therefore go through the client's own httpx
  client (same auth and transport) and their JSON is parsed here.
- Every call passes the circuit breaker (avatars/breaker.py): while Replicate is having an
  incident, calls are held back (a `ReplicateCallError` with `incident` set) instead of sent.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import httpx
import replicate
from django.conf import settings
from django.utils.dateparse import parse_datetime
from pydantic.v1 import ValidationError as PydanticValidationError
from replicate.exceptions import ReplicateError
from replicate.webhook import (
    InvalidSecretKeyError,
    Webhooks,
    WebhookSigningSecret,
    WebhookValidationError,
)

from avatars import breaker, errors
from avatars.errors import ErrorKind
from avatars.metrics import record_replicate_call

logger = logging.getLogger(__name__)

# Replicate answers API calls in well under a second; these bound one call when it does not,
# tightly enough that a step leased for one call is re-driven soon after its worker died.
TIMEOUT = httpx.Timeout(connect=2.0, read=7.0, write=5.0, pool=1.0)
# The longest one call can take (waiting for a connection, opening it, sending, answering):
# steps are leased for it, and a create is fenced for it.
CALL_DEADLINE_SECONDS = TIMEOUT.pool + TIMEOUT.connect + TIMEOUT.write + TIMEOUT.read
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
# Replicate's statuses are short words; a longer one is not a prediction object of theirs.
STATUS_MAX_LENGTH = 16
# Replicate takes data URIs (base64 and all) up to this size; larger files go through /v1/files.
DATA_URI_MAX_BYTES = 256 * 1024


class ReplicateCallError(Exception):
    """A call to Replicate did not give an answer we can use."""

    def __init__(
        self,
        detail: str,
        *,
        kind: ErrorKind,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        incident: bool = False,
    ):
        super().__init__(detail)
        self.detail = detail
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        # The request may have reached Replicate and done its work (a create that timed out).
        self.outcome_unknown = outcome_unknown
        # Replicate is having an incident (the breaker is open): nobody's call failed, so this
        # spends no retry budget; `retry_after` says when the breaker may let a call through.
        self.incident = incident


class InvalidWebhook(Exception):
    """A webhook whose signature, timestamp or headers do not check out."""


@dataclass(frozen=True)
class PredictionState:
    id: str
    status: str
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict = field(default_factory=dict)
    created_at: str | None = None
    completed_at: str | None = None
    # Replicate removed the output (an hour after completion): it can never be fetched.
    data_removed: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def output_url(self) -> str | None:
        """The first output URL; GPT-Image-1 returns a list of them."""
        output = self.output
        if isinstance(output, list):
            output = output[0] if output else None
        return output if isinstance(output, str) and output else None

    @property
    def predict_time(self) -> float | None:
        value = (self.metrics or {}).get("predict_time")
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class UploadedFile:
    id: str
    url: str


class _BoundedTransport(httpx.HTTPTransport):
    """Gives every request a timeout, even those the client sends with `timeout=None`."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = dict(request.extensions.get("timeout") or {})
        defaults = {"connect": TIMEOUT.connect, "read": TIMEOUT.read, "write": TIMEOUT.write}
        defaults["pool"] = TIMEOUT.pool
        for key, value in defaults.items():
            if timeout.get(key) is None:
                timeout[key] = value
        request.extensions["timeout"] = timeout
        return super().handle_request(request)


@lru_cache(maxsize=4)
def _client_for(api_token: str, base_url: str) -> replicate.Client:
    return replicate.Client(
        api_token=api_token,
        base_url=base_url,
        timeout=TIMEOUT,
        mounts={"all://": _BoundedTransport()},
    )


def _client() -> replicate.Client:
    return _client_for(settings.REPLICATE_API_TOKEN, settings.REPLICATE_BASE_URL)


_THROTTLE_DELAY = re.compile(r"available in\s+(\d+(?:\.\d+)?)\s*second", re.I)


def _throttle_delay(exc: ReplicateError, retry_after_header: str | None) -> float | None:
    """The wait a 429 gave: its `Retry-After` header, or its body's "available in N seconds"."""
    if retry_after_header:
        try:
            return max(0.0, float(retry_after_header))
        except ValueError:
            pass  # an HTTP date, or garbage: the body may still say
    match = _THROTTLE_DELAY.search(exc.detail or "")
    return float(match.group(1)) if match else None


def _translate(
    exc: Exception, *, sent_may_have_happened: bool, retry_after_header: str | None = None
) -> ReplicateCallError:
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        detail = f"HTTP {status}: {exc.title or ''} {exc.detail or ''}".strip()
        if status == 429:
            return ReplicateCallError(
                detail,
                kind=errors.PROVIDER_RATE_LIMITED,
                retryable=True,
                status=status,
                retry_after=_throttle_delay(exc, retry_after_header),
            )
        if status >= 500:
            # A gateway error may come after Replicate did the work: a create is then unknown.
            return ReplicateCallError(
                detail,
                kind=errors.PROVIDER_UNAVAILABLE,
                retryable=True,
                status=status,
                outcome_unknown=sent_may_have_happened,
            )
        if status in (401, 403):
            return ReplicateCallError(
                detail, kind=errors.PROVIDER_AUTH, retryable=False, status=status
            )
        if status == 404:
            return ReplicateCallError(detail, kind=errors.INTERNAL, retryable=False, status=status)
        return ReplicateCallError(
            detail, kind=errors.INVALID_REQUEST, retryable=False, status=status
        )
    if isinstance(exc, httpx.TransportError):
        # A connection that never opened can not have created anything; any later failure
        # (read timeout, dropped connection) may have.
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return ReplicateCallError(
            f"{type(exc).__name__}: {exc}",
            kind=errors.PROVIDER_UNAVAILABLE,
            retryable=True,
            outcome_unknown=sent_may_have_happened and not never_sent,
        )
    return ReplicateCallError(f"{type(exc).__name__}: {exc}", kind=errors.INTERNAL, retryable=False)


def _is_transient(exc: ReplicateCallError) -> bool:
    """A failure that says Replicate (or the way to it) is down, not that the request was bad."""
    return exc.retryable and exc.kind is errors.PROVIDER_UNAVAILABLE


def _guarded(endpoint: str, *, always: bool = False):
    """Pass the breaker, then count the call by endpoint and outcome (`ok`, a status, `network`).

    Transient failures feed the breaker; any other answer tells it Replicate is up. `always`
    calls go even while it is open (a cancel: else a prediction nobody wants is billed on).
    """

    def decorate(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            admission = breaker.Admission(allowed=True) if always else breaker.admit()
            if not admission.allowed:
                raise ReplicateCallError(
                    "held back: Replicate is having an incident",
                    kind=errors.PROVIDER_UNAVAILABLE,
                    retryable=True,
                    retry_after=admission.wait,
                    incident=True,
                )
            try:
                result = function(*args, **kwargs)
            except ReplicateCallError as exc:
                record_replicate_call(endpoint, str(exc.status) if exc.status else "network")
                if _is_transient(exc):
                    wait = breaker.record_failure(probe=admission.probe)
                    if wait is not None:
                        exc.incident = True
                        exc.retry_after = max(exc.retry_after or 0, wait)
                else:
                    breaker.record_answer(probe=admission.probe)
                raise
            record_replicate_call(endpoint, "ok")
            breaker.record_answer(probe=admission.probe)
            return result

        return call

    return decorate


_CALL_ERRORS = (ReplicateError, httpx.TransportError, PydanticValidationError)


def _send(method: str, path: str, **kwargs) -> httpx.Response:
    """One request through the client's own httpx client (its auth and our transport)."""
    response = _client()._client.request(method, path, **kwargs)
    if 400 <= response.status_code < 600:
        raise _translate(
            ReplicateError.from_response(response),
            sent_may_have_happened=method != "GET",
            retry_after_header=response.headers.get("Retry-After"),
        )
    return response


def _unreadable(method: str, path: str, exc: ValueError) -> ReplicateCallError:
    # An answer we can not read is Replicate misbehaving: try again later. After a create,
    # a prediction may well exist (look it up before creating another).
    return ReplicateCallError(
        f"unreadable answer to {method} {path}: {exc}",
        kind=errors.PROVIDER_UNAVAILABLE,
        retryable=True,
        outcome_unknown=method == "POST",
    )


def _request_json(method: str, path: str, **kwargs) -> Any:
    try:
        return _send(method, path, **kwargs).json()
    except httpx.TransportError as exc:
        raise _translate(exc, sent_may_have_happened=method != "GET") from exc
    except ValueError as exc:
        raise _unreadable(method, path, exc) from exc


def _request_prediction(method: str, path: str, **kwargs) -> PredictionState:
    payload = _request_json(method, path, **kwargs)
    try:
        return prediction_state_from_json(payload)
    except ValueError as exc:
        raise _unreadable(method, path, exc) from exc


@_guarded("create")
def create_prediction(
    *, model: str, input: dict, webhook: str | None = None, cancel_after: float | None = None
) -> PredictionState:
    """Start a prediction of an official model. The `completed` event only, when a webhook.

    `cancel_after` (seconds, at least Replicate's 5) has Replicate end the prediction itself
    once we could no longer follow it: aborted if it never started, canceled if running.
    """
    body: dict[str, Any] = {"input": input}
    if webhook:
        body |= {"webhook": webhook, "webhook_events_filter": ["completed"]}
    headers = {}
    if cancel_after is not None:
        headers["Cancel-After"] = f"{max(5, int(cancel_after))}s"
    return _request_prediction(
        "POST", f"/v1/models/{model}/predictions", json=body, headers=headers
    )


@_guarded("get")
def get_prediction(prediction_id: str) -> PredictionState:
    return _request_prediction("GET", f"/v1/predictions/{prediction_id}")


@_guarded("cancel", always=True)
def cancel_prediction(prediction_id: str) -> PredictionState:
    return _request_prediction("POST", f"/v1/predictions/{prediction_id}/cancel")


@_guarded("model_get")
def get_model_schema(model: str) -> dict:
    """The OpenAPI document of the model's latest version (`latest_version.openapi_schema`).

    Read as JSON, not through the client's Model object. A model without a readable version
    gives `{}`: there is then no schema to check against, which the caller reports.
    """
    body = _request_json("GET", f"/v1/models/{model}")
    version = body.get("latest_version") if isinstance(body, dict) else None
    schema = version.get("openapi_schema") if isinstance(version, dict) else None
    return schema if isinstance(schema, dict) else {}


@dataclass(frozen=True)
class ListedPrediction:
    """A prediction as Replicate's list shows it: enough to tell whether it is one of ours."""

    id: str
    status: str
    created_at: datetime | None
    input: dict
    webhook: str | None
    shows_webhook: bool  # Replicate's list may leave the field out


def _on_api_host(url: str) -> bool:
    """Whether a link the API gave leads back to it: our bearer token goes with every request."""
    base = httpx.URL(settings.REPLICATE_BASE_URL)
    target = base.join(url)
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)


def _list_predictions(*, created_after: datetime, pages: int) -> list[ListedPrediction]:
    """Predictions created after a time, newest first. The list JSON is read as it is."""
    query = urlencode({"created_after": created_after.isoformat()})
    path: str | None = f"/v1/predictions?{query}"
    listed: list[ListedPrediction] = []
    try:
        for _ in range(pages):
            if not path:
                break
            body = _send("GET", path).json()
            for item in body.get("results", []):
                created = parse_datetime(item.get("created_at") or "")
                if created is not None and created < created_after:
                    return listed
                listed.append(
                    ListedPrediction(
                        id=item["id"],
                        status=item.get("status", ""),
                        created_at=created,
                        input=item.get("input") or {},
                        webhook=item.get("webhook"),
                        shows_webhook="webhook" in item,
                    )
                )
            path = body.get("next")
            if path and not _on_api_host(path):
                logger.warning("predictions list: next page on another host not followed")
                break
    except _CALL_ERRORS as exc:
        raise _translate(exc, sent_may_have_happened=False) from exc
    return listed


@_guarded("list")
def list_recent_predictions(*, created_after: datetime, pages: int = 10) -> list[ListedPrediction]:
    return _list_predictions(created_after=created_after, pages=pages)


@dataclass(frozen=True)
class FoundPrediction:
    """A lost create's prediction, and the id of the upload it was given ('' when inline)."""

    state: PredictionState
    input_file_id: str


_FILE_PATH = re.compile(r"^/v1/files/(?P<id>[^/]+)$")


def _given_image(listed_input: dict) -> tuple[str | None, str]:
    """The sha256 of the one image a listed prediction was given, and its upload's id.

    Inline (a data URI): hashed here. An upload of ours (a Files API URL on the API's host):
    the file's own checksum, read unguarded (the list call passed the breaker). Anything else:
    None, so it is never taken for ours.
    """
    images = listed_input.get("input_images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        return None, ""
    image = images[0]
    if image.startswith("data:"):
        try:
            payload = base64.b64decode(image.partition(",")[2], validate=True)
        except ValueError:
            return None, ""
        return hashlib.sha256(payload).hexdigest(), ""
    match = _FILE_PATH.match(httpx.URL(image).path) if _on_api_host(image) else None
    if match is None:
        return None, ""
    checksums = _send("GET", f"/v1/files/{match['id']}").json().get("checksums") or {}
    return checksums.get("sha256"), match["id"]


@_guarded("list")
def find_recent_prediction(
    *,
    input_fields: dict,
    image_sha256: str,
    created_after: datetime,
    webhook: str | None = None,
    exclude: set[str] = frozenset(),
    pages: int = 3,
) -> FoundPrediction | None:
    """A prediction we created but never heard back about, found by what we sent.

    Replicate has no idempotency key for creates, so a create whose answer was lost is looked
    up among recent predictions by its input fields, the image it was given (its sha256: the
    same prompt for the same user from another selfie is not ours) and its webhook URL, where
    the list shows it. Only a single match counts: when two could be ours, neither is taken
    (the one left over is then `strays.cancel_stray_predictions`' to stop). The client's
    Prediction model drops fields, so the list JSON is read as it is.
    """
    if not image_sha256:
        return None  # an erased selfie: nothing can be shown to be ours
    candidates = [
        item
        for item in _list_predictions(created_after=created_after, pages=pages)
        if item.id not in exclude
        and all(item.input.get(key) == value for key, value in input_fields.items())
        and (webhook is None or not item.shows_webhook or item.webhook == webhook)
    ]
    try:
        given = [(item, _given_image(item.input)) for item in candidates]
    except _CALL_ERRORS as exc:
        raise _translate(exc, sent_may_have_happened=False) from exc
    matches = [(item, file_id) for item, (digest, file_id) in given if digest == image_sha256]
    if len(matches) > 1:
        logger.warning("lost create: %s predictions could be ours; taking none", len(matches))
    if len(matches) != 1:
        return None
    [(item, file_id)] = matches
    # Read unguarded: this call already passed the breaker.
    return FoundPrediction(_request_prediction("GET", f"/v1/predictions/{item.id}"), file_id)


@_guarded("upload_file")
def upload_file(content: bytes, *, filename: str, content_type: str) -> UploadedFile:
    """Put a file where the model can read it, without making our own media public."""
    try:
        uploaded = _client().files.create(
            io.BytesIO(content), filename=filename, content_type=content_type
        )
    except _CALL_ERRORS as exc:
        raise _translate(exc, sent_may_have_happened=True) from exc
    return UploadedFile(id=uploaded.id, url=uploaded.urls["get"])


@_guarded("delete_file")
def delete_file(file_id: str) -> None:
    try:
        _client().files.delete(file_id)
    except _CALL_ERRORS as exc:
        raise _translate(exc, sent_may_have_happened=True) from exc


def data_uri(content: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(content).decode()}"


def image_input(
    content: bytes, *, filename: str, content_type: str
) -> tuple[str, UploadedFile | None]:
    """An image as a model input: inline when small enough, else uploaded through the Files API.

    Our own media never has to be public either way. Returns the input value and the upload
    (to delete once the prediction ends), if there was one.
    """
    uri = data_uri(content, content_type)
    if len(uri) <= DATA_URI_MAX_BYTES:
        return uri, None
    uploaded = upload_file(content, filename=filename, content_type=content_type)
    return uploaded.url, uploaded


@lru_cache(maxsize=4)
def _fetched_webhook_secret(api_token: str, base_url: str) -> str:
    try:
        return _client_for(api_token, base_url).webhooks.default.secret().key
    except _CALL_ERRORS as exc:
        raise _translate(exc, sent_may_have_happened=False) from exc


def webhook_secret() -> str:
    """`REPLICATE_WEBHOOK_SECRET`, or the account's default secret fetched once."""
    return settings.REPLICATE_WEBHOOK_SECRET or _fetched_webhook_secret(
        settings.REPLICATE_API_TOKEN, settings.REPLICATE_BASE_URL
    )


def verify_webhook(*, headers: dict[str, str], body: bytes, tolerance: int = 300) -> None:
    """Raise InvalidWebhook unless the Standard Webhooks signature and timestamp check out.

    A malformed secret is our configuration's fault, not the sender's: ReplicateCallError.
    """
    try:
        Webhooks.validate(
            headers=headers,
            body=body.decode("utf-8"),
            secret=WebhookSigningSecret(key=webhook_secret()),
            tolerance=tolerance,
        )
    except InvalidSecretKeyError as exc:
        raise ReplicateCallError(
            "the webhook signing secret is malformed", kind=errors.PROVIDER_AUTH, retryable=False
        ) from exc
    except (WebhookValidationError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidWebhook(str(exc)) from exc


def prediction_state_from_json(payload: dict) -> PredictionState:
    """A prediction object as Replicate sends it: from a GET, a cancel, a list or a webhook.

    Refused (ValueError) without a string id and status; fields of an unexpected type are
    read as absent, so no body can make us store what the database would refuse.
    """
    if not isinstance(payload, dict):
        raise ValueError("not a prediction object")
    prediction_id, status = payload.get("id"), payload.get("status")
    if not (isinstance(prediction_id, str) and prediction_id):
        raise ValueError("a prediction object without an id")
    if not (isinstance(status, str) and status and len(status) <= STATUS_MAX_LENGTH):
        raise ValueError("a prediction object without a status")
    error = payload.get("error")
    return PredictionState(
        id=prediction_id,
        status=status,
        output=payload.get("output"),
        error=str(error) if error else None,
        logs=_of_type(payload.get("logs"), str, ""),
        metrics=_of_type(payload.get("metrics"), dict, {}),
        created_at=_of_type(payload.get("created_at"), str, None),
        completed_at=_of_type(payload.get("completed_at"), str, None),
        data_removed=payload.get("data_removed") is True,
    )


def _of_type(value: Any, kind: type, default: Any) -> Any:
    return value if isinstance(value, kind) else default
