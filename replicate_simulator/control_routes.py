"""The control API under ``/_simulator/`` (no auth): scenarios, config, outages, reset, logs."""

from __future__ import annotations

from typing import Any

from . import problems
from .catalog import SchemaChangeError
from .config import ConfigError
from .http_types import Request, Response
from .openapi import input_schema
from .scenarios import ScenarioError
from .simulator import Simulator

PREFIX = "/_simulator"


def handle_control(sim: Simulator, request: Request) -> Response:
    """Route a control request; errors are problem documents with status 400/404/405."""
    path = request.path[len(PREFIX) :].rstrip("/") or "/"
    try:
        return _dispatch(sim, request, path)
    except (ConfigError, ScenarioError, SchemaChangeError) as exc:
        return Response.problem(problems.bad_request(str(exc)))
    except ValueError as exc:  # malformed JSON body or query
        return Response.problem(problems.bad_request(f"Invalid request: {exc}"))


def _dispatch(sim: Simulator, request: Request, path: str) -> Response:
    method = request.method
    if path.startswith("/predictions/") and method == "GET":
        return _prediction(sim, path.removeprefix("/predictions/"))
    if path.startswith("/models/") and path.endswith("/schema"):
        return _model_schema(sim, request, path.removeprefix("/models/").removesuffix("/schema"))
    handlers = _HANDLERS.get(path)
    if handlers is None:
        return Response.problem(problems.not_found())
    handler = handlers.get(method)
    if handler is None:
        return Response.problem(problems.generic(405, "Method not allowed."))
    return handler(sim, request)


def _since(request: Request) -> int:
    values = request.query.get("since")
    return int(values[0]) if values else 0


def _health(sim: Simulator, request: Request) -> Response:
    return Response.json(
        200,
        {"status": "ok", "base_url": sim.base_url, "delayed_downloads": sim.delayed_downloads},
    )


def _reset(sim: Simulator, request: Request) -> Response:
    sim.reset()
    return Response.json(200, {"status": "reset", "config": sim.config.to_dict()})


def _get_config(sim: Simulator, request: Request) -> Response:
    return Response.json(200, sim.config.to_dict())


def _set_config(sim: Simulator, request: Request) -> Response:
    changes: Any = request.json()
    if not isinstance(changes, dict):
        raise ConfigError("config changes must be a JSON object")
    if "webhook_retry_schedule" in changes and isinstance(changes["webhook_retry_schedule"], list):
        changes["webhook_retry_schedule"] = tuple(changes["webhook_retry_schedule"])
    return Response.json(200, sim.update_config(changes).to_dict())


def _get_outage(sim: Simulator, request: Request) -> Response:
    return Response.json(200, sim.outage())


def _start_outage(sim: Simulator, request: Request) -> Response:
    data: Any = request.json()
    if not isinstance(data, dict) or "seconds" not in data:
        raise ConfigError('outage needs a JSON object {"seconds": N}')
    return Response.json(200, sim.start_outage(data["seconds"]))


def _end_outage(sim: Simulator, request: Request) -> Response:
    return Response.json(200, sim.end_outage())


def _add_scenarios(sim: Simulator, request: Request) -> Response:
    data = request.json()
    if isinstance(data, list):
        return Response.json(201, [sim.scenarios.add(item).to_dict() for item in data])
    return Response.json(201, sim.scenarios.add(data).to_dict())


def _list_scenarios(sim: Simulator, request: Request) -> Response:
    return Response.json(200, {"scenarios": sim.scenarios.pending()})


def _clear_scenarios(sim: Simulator, request: Request) -> Response:
    sim.scenarios.clear()
    return Response.empty(204)


def _requests(sim: Simulator, request: Request) -> Response:
    return Response.json(200, {"requests": sim.request_log.entries(_since(request))})


def _clear_requests(sim: Simulator, request: Request) -> Response:
    sim.request_log.clear()
    return Response.empty(204)


def _webhooks(sim: Simulator, request: Request) -> Response:
    return Response.json(200, {"deliveries": sim.webhook_log.entries(_since(request))})


def _predictions(sim: Simulator, request: Request) -> Response:
    return Response.json(200, {"predictions": sim.predictions_debug()})


def _prediction(sim: Simulator, prediction_id: str) -> Response:
    found = next((p for p in sim.predictions_debug() if p["id"] == prediction_id), None)
    return Response.json(200, found) if found else Response.problem(problems.not_found())


def _files(sim: Simulator, request: Request) -> Response:
    return Response.json(200, sim.files.debug())


def _models(sim: Simulator, request: Request) -> Response:
    return Response.json(
        200,
        {
            "models": [
                {
                    "model": spec.full_name,
                    "version": spec.version_id,
                    "required": list(spec.required),
                    "schema_changed": sim.models.is_changed(spec.full_name),
                }
                for spec in sim.models.specs().values()
            ]
        },
    )


def _model_schema(sim: Simulator, request: Request, model: str) -> Response:
    """PATCH: change the model's input schema (served and validated); DELETE: restore it."""
    if request.method == "PATCH":
        spec = sim.models.change(model, request.json())
    elif request.method == "DELETE":
        spec = sim.models.restore(model)
    else:
        return Response.problem(problems.generic(405, "Method not allowed."))
    if spec is None:
        return Response.problem(problems.not_found(f"No simulated model {model}."))
    return Response.json(200, {"model": spec.full_name, "input": input_schema(spec)})


def _secret(sim: Simulator, request: Request) -> Response:
    return Response.json(200, {"key": sim.webhook_secret})


_HANDLERS: dict[str, dict[str, Any]] = {
    "/health": {"GET": _health},
    "/reset": {"POST": _reset},
    "/config": {"GET": _get_config, "POST": _set_config, "PATCH": _set_config},
    "/outage": {"GET": _get_outage, "POST": _start_outage, "DELETE": _end_outage},
    "/scenarios": {"GET": _list_scenarios, "POST": _add_scenarios, "DELETE": _clear_scenarios},
    "/requests": {"GET": _requests, "DELETE": _clear_requests},
    "/webhooks": {"GET": _webhooks},
    "/predictions": {"GET": _predictions},
    "/files": {"GET": _files},
    "/models": {"GET": _models},
    "/webhook-secret": {"GET": _secret},
}
