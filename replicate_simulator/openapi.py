"""A model's OpenAPI document as Cog writes it, and the model object Replicate serves it in."""

from __future__ import annotations

from typing import Any

from .schema import SECRET_INPUTS, WEBHOOK_EVENTS, ModelSpec, Property

COG_VERSION = "0.16.8"
# Simulated versions never change (a changed schema keeps its version): one push date for all.
VERSION_CREATED_AT = "2025-04-23T00:00:00.000000Z"
_STATUSES = ("starting", "processing", "succeeded", "canceled", "failed", "aborted")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _enumeration(name: str, choices: tuple[Any, ...], kind: str) -> dict[str, Any]:
    """An enum as pydantic (and so Cog) names it: its own schema, titled like the input."""
    return {"title": name, "description": "An enumeration.", "enum": list(choices), "type": kind}


def _input_property(prop: Property, order: int) -> dict[str, Any]:
    if prop.enum is not None:
        # Cog wraps an enum's reference in allOf so that default and x-order may sit beside it.
        schema: dict[str, Any] = {"allOf": [_ref(prop.name)]}
    else:
        schema = {"type": prop.type, "title": prop.name.replace("_", " ").title()}
    if prop.type == "array":
        items = {"type": "string"}
        if prop.item_format is not None:
            items["format"] = prop.item_format
        schema["items"] = items
    if prop.name in SECRET_INPUTS:
        schema |= {"format": "password", "writeOnly": True, "x-cog-secret": True}
    for keyword in ("minimum", "maximum", "default"):
        value = getattr(prop, keyword)
        if value is not None:
            schema[keyword] = value
    schema["x-order"] = order
    return schema


def input_schema(spec: ModelSpec) -> dict[str, Any]:
    """`components.schemas.Input`: what a create's `input` must look like."""
    return {
        "type": "object",
        "title": "Input",
        "required": list(spec.required),
        "properties": {
            prop.name: _input_property(prop, order) for order, prop in enumerate(spec.properties)
        },
    }


def openapi_schema(spec: ModelSpec) -> dict[str, Any]:
    """The version's `openapi_schema`: paths and components as Cog's HTTP server writes them."""
    enums = {
        prop.name: _enumeration(prop.name, prop.enum, prop.type)
        for prop in spec.properties
        if prop.enum is not None
    }
    json_body = {"application/json": {"schema": _ref("PredictionResponse")}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "operationId": "predict_predictions_post",
                    "requestBody": {
                        "content": {"application/json": {"schema": _ref("PredictionRequest")}}
                    },
                    "responses": {
                        "200": {"description": "Successful Response", "content": json_body}
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Input": input_schema(spec),
                "Output": {
                    "type": "array",
                    "items": {"type": "string", "format": "uri"},
                    "title": "Output",
                },
                "Status": _enumeration("Status", _STATUSES, "string"),
                "WebhookEvent": _enumeration("WebhookEvent", WEBHOOK_EVENTS, "string"),
                "PredictionRequest": {
                    "type": "object",
                    "title": "PredictionRequest",
                    "properties": {
                        "id": {"type": "string", "title": "Id"},
                        "input": _ref("Input"),
                        "webhook": {"type": "string", "format": "uri", "title": "Webhook"},
                        "webhook_events_filter": {
                            "type": "array",
                            "items": _ref("WebhookEvent"),
                            "default": list(WEBHOOK_EVENTS),
                        },
                    },
                },
                "PredictionResponse": {
                    "type": "object",
                    "title": "PredictionResponse",
                    "properties": {
                        "id": {"type": "string", "title": "Id"},
                        "input": _ref("Input"),
                        "output": _ref("Output"),
                        "status": _ref("Status"),
                        "error": {"type": "string", "title": "Error"},
                        "logs": {"type": "string", "title": "Logs", "default": ""},
                        "metrics": {"type": "object", "title": "Metrics"},
                    },
                },
                **enums,
            }
        },
    }


def model_object(spec: ModelSpec) -> dict[str, Any]:
    """`GET /v1/models/{owner}/{name}`: Replicate's model object with its latest version."""
    return {
        "url": f"https://replicate.com/{spec.full_name}",
        "owner": spec.owner,
        "name": spec.name,
        "description": f"{spec.full_name}, as simulated by the Replicate simulator",
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": "https://openai.com/policies/terms-of-use",
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": {
            "id": spec.version_id,
            "created_at": VERSION_CREATED_AT,
            "cog_version": COG_VERSION,
            "openapi_schema": openapi_schema(spec),
        },
    }
