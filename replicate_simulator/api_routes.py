"""Replicate's HTTP API (the part we use) mapped onto the :class:`Simulator`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import problems
from .durations import parse_duration
from .http_types import Request, Response
from .multipart import MultipartError, parse_multipart
from .openapi import model_object
from .scenarios import Scenario
from .schema import resolve_version, validate_request_body
from .simulator import CreateRequest, Simulator

Handler = Callable[[Simulator, Request, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler: Handler
    auth: bool = True


def _route(
    method: str, pattern: str, endpoint: str, auth: bool = True
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, re.compile(pattern), endpoint, handler, auth))
        return handler

    return register


ROUTES: list[Route] = []


def handle_api(sim: Simulator, request: Request) -> Response:
    """Authenticate, apply queued request scenarios and the rate limit, then run the route.

    An outage comes first: it answers every ``/v1`` call (even unauthenticated or unknown
    ones) without consuming scenarios or rate-limit tokens, as a load balancer in front of
    a down API would. Output files (``/delivery``) are another service and stay up.
    """
    route, params = _match(request)
    if (request.path == "/v1" or request.path.startswith("/v1/")) and sim.in_outage():
        response = Response.problem(problems.unavailable())
        response.note = {"endpoint": route.endpoint if route else None, "scenario": "outage"}
        return response
    if route is None:
        return Response.problem(_unmatched_problem(request))
    if route.auth and not _authorized(sim, request):
        return _noted(Response.problem(problems.unauthenticated()), route.endpoint)
    scenario = sim.scenarios.take_request(route.endpoint, params.get("id"))
    drop_after = False
    delay_after = 0.0
    if scenario is not None:
        if scenario.kind == "delay" and scenario.params.get("after_create"):
            delay_after = float(scenario.params["seconds"])  # do the work, then answer late
        elif scenario.kind == "delay":
            time.sleep(float(scenario.params["seconds"]))
        elif scenario.kind == "http_error":
            return _noted(_staged_error(scenario), route.endpoint, scenario)
        elif scenario.kind == "drop_connection":
            if not scenario.params.get("after_create"):
                return _noted(Response.dropped(), route.endpoint, scenario)
            drop_after = True  # process the request, then hang up without answering
    if route.endpoint == "create":
        wait = sim.limiter.acquire()
        if wait is not None:
            return _noted(
                Response.problem(problems.throttled(wait), {"retry-after": str(wait)}),
                route.endpoint,
            )
    response = route.handler(sim, request, params)
    if delay_after:
        time.sleep(delay_after)
    if drop_after:
        return _noted(Response(status=0, drop=True, note=response.note), route.endpoint, scenario)
    return _noted(response, route.endpoint, scenario)


def _match(request: Request) -> tuple[Route | None, dict[str, str]]:
    method = "GET" if request.method == "HEAD" else request.method
    for route in ROUTES:
        match = route.pattern.match(request.path)
        if match and route.method == method:
            return route, match.groupdict()
    return None, {}


def _unmatched_problem(request: Request) -> dict[str, Any]:
    if any(r.pattern.match(request.path) for r in ROUTES):
        return problems.generic(405, "Method not allowed.")
    return problems.not_found()


def _noted(response: Response, endpoint: str, scenario: Scenario | None = None) -> Response:
    response.note = {**response.note, "endpoint": endpoint}
    if scenario is not None:
        response.note["scenario"] = scenario.kind
    return response


def _authorized(sim: Simulator, request: Request) -> bool:
    scheme, _, token = request.header("authorization").partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        return False
    expected = sim.config.token
    return expected is None or token == expected


def _staged_error(scenario: Scenario) -> Response:
    status = int(scenario.params["status"])
    headers = {}
    retry_after = scenario.params.get("retry_after", 1 if status == 429 else None)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if "body" in scenario.params:
        content_type = scenario.params.get("content_type", "text/html")
        return Response(
            status=status,
            body=str(scenario.params["body"]).encode(),
            headers={"content-type": content_type, **headers},
        )
    if status == 429:
        return Response.problem(problems.throttled(int(retry_after or 1)), headers)
    return Response.problem(problems.generic(status), headers)


def _prefer_wait(sim: Simulator, request: Request) -> float | None:
    """Seconds to hold a create open for ``Prefer: wait`` / ``wait=N`` (1..60)."""
    for token in request.header("prefer").split(","):
        name, _, value = token.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return sim.config.max_wait
        try:
            seconds = int(value.strip())
        except ValueError:
            return None
        return float(min(max(seconds, 1), 60, sim.config.max_wait))
    return None


def _read_json(request: Request) -> Any:
    try:
        return request.json()
    except ValueError:
        return _INVALID_JSON


_INVALID_JSON = object()


def _cancel_after(request: Request) -> float | None:
    """Seconds in the ``Cancel-After`` header (``ValueError`` if it is not a duration)."""
    if "cancel-after" not in request.headers:
        return None
    return parse_duration(request.header("cancel-after"))


def _create(sim: Simulator, request: Request, body: Any, spec_version: Any) -> Response:
    try:
        cancel_after = _cancel_after(request)
    except ValueError:
        value = request.header("cancel-after")
        return Response.problem(
            problems.bad_request(
                f"Cancel-After header is invalid: {value!r} is not a duration"
                " (e.g. 30s, 5m, 1m30s, 250ms)."
            )
        )
    checked = sim.check_create(*spec_version, body, cancel_after=cancel_after)
    if not isinstance(checked, CreateRequest):
        return Response.problem(checked)
    prediction = sim.create_prediction(checked)
    wait = _prefer_wait(sim, request)
    if wait:
        sim.wait_until_terminal(prediction.id, wait)
    snapshot = sim.get_prediction(prediction.id)
    if snapshot is None:  # reset while waiting
        return Response.problem(problems.not_found())
    response = Response.json(201, snapshot)
    response.note["prediction_id"] = prediction.id
    return response


@_route("POST", r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions$", "create")
def create_model_prediction(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    body = _read_json(request)
    if body is _INVALID_JSON:
        return Response.problem(problems.bad_request("Request body is not valid JSON."))
    spec = sim.models.get(f"{params['owner']}/{params['name']}")
    if spec is None:
        return Response.problem(_model_not_found())
    errors = validate_request_body(body, needs_version=False)
    if errors:
        return Response.problem(problems.validation_failed(errors))
    return _create(sim, request, body, (spec, "hidden"))


def _model_not_found() -> dict[str, Any]:
    return problems.not_found("The requested model could not be found.")


@_route("GET", r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)$", "model_get")
def get_model(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    """The model object, its latest version's OpenAPI schema the one creates are checked by."""
    spec = sim.models.get(f"{params['owner']}/{params['name']}")
    if spec is None:
        return Response.problem(_model_not_found())
    return Response.json(200, model_object(spec))


@_route("POST", r"^/v1/predictions$", "create")
def create_version_prediction(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    body = _read_json(request)
    if body is _INVALID_JSON:
        return Response.problem(problems.bad_request("Request body is not valid JSON."))
    errors = validate_request_body(body, needs_version=True)
    if errors:
        return Response.problem(problems.validation_failed(errors))
    resolved = resolve_version(body["version"], sim.models.specs())
    if resolved is None:
        return Response.problem(problems.invalid_version())
    return _create(sim, request, body, resolved)


@_route("GET", r"^/v1/predictions$", "list")
def list_predictions(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    try:
        return Response.json(200, sim.list_predictions(request.query))
    except ValueError:
        return Response.problem(problems.bad_request("Invalid created_after/created_before."))


@_route("GET", r"^/v1/predictions/(?P<id>[^/]+)$", "get")
def get_prediction(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    found = sim.get_prediction(params["id"])
    return Response.json(200, found) if found else Response.problem(problems.not_found())


@_route("POST", r"^/v1/predictions/(?P<id>[^/]+)/cancel$", "cancel")
def cancel_prediction(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    found = sim.cancel_prediction(params["id"])
    return Response.json(200, found) if found else Response.problem(problems.not_found())


@_route("POST", r"^/v1/files$", "file_create")
def create_file(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    try:
        parts = parse_multipart(request.header("content-type"), request.body)
    except MultipartError as exc:
        return Response.problem(problems.bad_request(str(exc)))
    fields = {part.name: part for part in parts}
    content = fields.get("content")
    if content is None:
        missing = problems.InvalidField("required", "", "content is required")
        return Response.problem(problems.validation_failed([missing]))
    metadata: Any = {}
    if "metadata" in fields:
        try:
            metadata = json.loads(fields["metadata"].data or b"{}")
        except ValueError:
            return Response.problem(problems.bad_request("metadata must be valid JSON."))
    name = _text(fields.get("filename")) or content.filename or "file"
    content_type = _text(fields.get("type")) or content.content_type or "application/octet-stream"
    return Response.json(201, sim.files.create(content.data, name, content_type, metadata))


def _text(part: Any) -> str | None:
    return part.data.decode("utf-8", "replace").strip() if part is not None else None


@_route("GET", r"^/v1/files$", "file_list")
def list_files(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, sim.files.list())


@_route("GET", r"^/v1/files/(?P<id>[^/]+)$", "file_get")
def get_file(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    found = sim.files.get(params["id"])
    if found is None:
        return Response.problem(problems.not_found("File not found"))
    return Response.json(200, found)


@_route("DELETE", r"^/v1/files/(?P<id>[^/]+)$", "file_delete")
def delete_file(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    if not sim.files.delete(params["id"]):
        return Response.problem(problems.not_found("File not found"))
    return Response.empty(204)


@_route("GET", r"^/v1/files/(?P<id>[^/]+)/download$", "file_download", auth=False)
def download_file(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    stored = sim.files.download(params["id"], request.query)
    if stored is None:
        return Response.problem(problems.not_found("File not found"))
    return Response(
        status=200,
        body=stored.data,
        headers={
            "content-type": stored.content_type,
            "content-disposition": f'attachment; filename="{stored.name}"',
        },
    )


@_route("GET", r"^/v1/webhooks/default/secret$", "webhook_secret")
def webhook_secret(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, {"key": sim.webhook_secret})


@_route("GET", r"^/delivery/(?P<id>[^/]+)/(?P<name>[^/]+)$", "output", auth=False)
def output_file(sim: Simulator, request: Request, params: dict[str, str]) -> Response:
    sim.hold_download()
    found = sim.output_file(params["id"], params["name"])
    if found is None:
        return Response(
            status=404, body=b"Not Found", headers={"content-type": "text/plain; charset=utf-8"}
        )
    data, content_type = found
    return Response(
        status=200,
        body=data,
        headers={"content-type": content_type, "cache-control": "public, max-age=3600"},
    )
