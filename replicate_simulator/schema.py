"""Input schemas of the simulated models and Replicate-style validation of request bodies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .ids import version_id_for
from .problems import InvalidField

WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
SECRET_INPUTS = frozenset({"openai_api_key"})
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Property:
    """One input of a model, in the subset of JSON Schema these models use."""

    name: str
    type: str
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None
    item_format: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A model the simulator can run."""

    owner: str
    name: str
    properties: tuple[Property, ...]
    required: tuple[str, ...]

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def version_id(self) -> str:
        return version_id_for(self.full_name)

    def property(self, name: str) -> Property | None:
        return next((p for p in self.properties if p.name == name), None)


_GPT_IMAGE_PROPERTIES = (
    Property("prompt", "string"),
    Property("openai_api_key", "string"),
    Property("aspect_ratio", "string", enum=("1:1", "3:2", "2:3"), default="1:1"),
    Property("input_images", "array", item_format="uri"),
    Property("input_fidelity", "string", enum=("low", "high"), default="low"),
    Property("number_of_images", "integer", minimum=1, maximum=10, default=1),
    Property("quality", "string", enum=("low", "medium", "high", "auto"), default="auto"),
    Property("background", "string", enum=("auto", "transparent", "opaque"), default="auto"),
    Property("output_compression", "integer", minimum=0, maximum=100, default=90),
    Property("output_format", "string", enum=("png", "jpeg", "webp"), default="webp"),
    Property("moderation", "string", enum=("auto", "low"), default="auto"),
    Property("user_id", "string"),
)

# gpt-image-2 keeps faces without being asked (no input_fidelity), makes one image a call and no
# transparent backgrounds, and bills through Replicate unless a key is given.
_GPT_IMAGE_2_PROPERTIES = (
    Property("prompt", "string"),
    Property("openai_api_key", "string"),
    Property("aspect_ratio", "string", enum=("1:1", "3:2", "2:3"), default="1:1"),
    Property("input_images", "array", item_format="uri"),
    Property("number_of_images", "integer", minimum=1, maximum=1, default=1),
    Property("quality", "string", enum=("low", "medium", "high", "auto"), default="auto"),
    Property("background", "string", enum=("auto", "opaque"), default="auto"),
    Property("output_compression", "integer", minimum=0, maximum=100, default=90),
    Property("output_format", "string", enum=("png", "jpeg", "webp"), default="webp"),
    Property("moderation", "string", enum=("auto", "low"), default="auto"),
    Property("user_id", "string"),
)

MODELS: dict[str, ModelSpec] = {
    spec.full_name: spec
    for spec in (
        ModelSpec("openai", "gpt-image-1", _GPT_IMAGE_PROPERTIES, ("prompt", "openai_api_key")),
        ModelSpec(
            "openai", "gpt-image-1-mini", _GPT_IMAGE_PROPERTIES, ("prompt", "openai_api_key")
        ),
        # gpt-image-1.5 bills through Replicate when no key is given, so the key is optional.
        ModelSpec("openai", "gpt-image-1.5", _GPT_IMAGE_PROPERTIES, ("prompt",)),
        ModelSpec("openai", "gpt-image-2", _GPT_IMAGE_2_PROPERTIES, ("prompt",)),
    )
}


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value (whole floats count as integers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if math.isfinite(value) and value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(field: str, expected: str, value: Any) -> InvalidField:
    return InvalidField(
        "invalid_type", field, f"Invalid type. Expected: {expected}, given: {json_type(value)}"
    )


def _enum_error(field: str, label: str, allowed: tuple[str, ...]) -> InvalidField:
    choices = ", ".join(f'"{choice}"' for choice in allowed)
    return InvalidField("enum", field, f"{label} must be one of the following: {choices}")


def is_uri(value: str) -> bool:
    """Whether ``value`` is an absolute URI (scheme plus something), as format ``uri`` wants."""
    parts = urlsplit(value)
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme or "")) and bool(
        parts.netloc or parts.path
    )


def validate_input(spec: ModelSpec, data: Any) -> list[InvalidField]:
    """Check ``input`` against the model's schema the way Replicate reports it."""
    if not isinstance(data, dict):
        return [_type_error("input", "object", data)]
    errors = [
        InvalidField("required", "input", f"{name} is required")
        for name in spec.required
        if name not in data
    ]
    for prop in spec.properties:
        if prop.name in data:
            errors.extend(_validate_property(prop, data[prop.name]))
    errors.extend(
        InvalidField(
            "additional_property_not_allowed", "input", f"Additional property {k} is not allowed"
        )
        for k in data
        if spec.property(k) is None
    )
    return errors


def _validate_property(prop: Property, value: Any) -> list[InvalidField]:
    field = f"input.{prop.name}"
    kind = json_type(value)
    if prop.type == "integer":
        if kind != "integer":
            return [_type_error(field, "integer", value)]
        if prop.minimum is not None and value < prop.minimum:
            return [
                InvalidField(
                    "number_gte", field, f"Must be greater than or equal to {prop.minimum}"
                )
            ]
        if prop.maximum is not None and value > prop.maximum:
            return [
                InvalidField("number_lte", field, f"Must be less than or equal to {prop.maximum}")
            ]
        return []
    if prop.type == "array":
        if kind != "array":
            return [_type_error(field, "array", value)]
        errors = []
        for index, item in enumerate(value):
            item_field = f"{field}.{index}"
            if json_type(item) != "string":
                errors.append(_type_error(item_field, "string", item))
            elif prop.item_format == "uri" and not is_uri(item):
                errors.append(InvalidField("format", item_field, "Does not match format 'uri'"))
        return errors
    if kind != "string":
        return [_type_error(field, "string", value)]
    if prop.enum is not None and value not in prop.enum:
        return [_enum_error(field, prop.name, prop.enum)]
    return []


def validate_request_body(body: Any, *, needs_version: bool) -> list[InvalidField]:
    """Check the top level of a create request (``input``, ``webhook``, ...)."""
    if not isinstance(body, dict):
        return [_type_error("(root)", "object", body)]
    allowed = {"input", "stream", "webhook", "webhook_completed", "webhook_events_filter"}
    if needs_version:
        allowed.add("version")
    errors: list[InvalidField] = []
    for name in ("version", "input") if needs_version else ("input",):
        if name not in body:
            errors.append(InvalidField("required", "", f"{name} is required"))
    if needs_version and "version" in body and json_type(body["version"]) != "string":
        errors.append(_type_error("version", "string", body["version"]))
    for name in ("webhook", "webhook_completed"):
        if name in body:
            value = body[name]
            if json_type(value) != "string":
                errors.append(_type_error(name, "string", value))
            elif not _is_http_url(value):
                errors.append(InvalidField("format", name, "Does not match format 'uri'"))
    if "webhook_events_filter" in body:
        errors.extend(_validate_events_filter(body["webhook_events_filter"]))
    if "stream" in body and json_type(body["stream"]) != "boolean":
        errors.append(_type_error("stream", "boolean", body["stream"]))
    errors.extend(
        InvalidField(
            "additional_property_not_allowed", "", f"Additional property {k} is not allowed"
        )
        for k in body
        if k not in allowed
    )
    return errors


def _validate_events_filter(value: Any) -> list[InvalidField]:
    if json_type(value) != "array":
        return [_type_error("webhook_events_filter", "array", value)]
    errors = []
    for index, item in enumerate(value):
        field = f"webhook_events_filter.{index}"
        if json_type(item) != "string":
            errors.append(_type_error(field, "string", item))
        elif item not in WEBHOOK_EVENTS:
            errors.append(_enum_error(field, field, WEBHOOK_EVENTS))
    return errors


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def resolve_version(
    value: str, models: Mapping[str, ModelSpec] = MODELS
) -> tuple[ModelSpec, str] | None:
    """Map a ``version`` field to a model and the ``version`` the prediction reports.

    Accepts ``owner/name`` (official models: reported as ``hidden``), ``owner/name:id``
    and a bare 64-hex id.
    """
    if _VERSION_ID.match(value):
        spec = next((s for s in models.values() if s.version_id == value), None)
        return (spec, value) if spec else None
    name, _, version = value.partition(":")
    spec = models.get(name)
    if spec is None:
        return None
    if not version:
        return spec, "hidden"
    return (spec, version) if version == spec.version_id else None


def redact_input(data: dict[str, Any]) -> dict[str, Any]:
    """The input as echoed back: secrets are never returned or logged."""
    return {k: ("[REDACTED]" if k in SECRET_INPUTS else v) for k, v in data.items()}
