"""RFC 7807 problem bodies with the titles and details Replicate uses."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


@dataclass(frozen=True)
class InvalidField:
    """One entry of Replicate's ``invalid_fields`` (gojsonschema-style)."""

    type: str
    field: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document; Replicate puts ``title``, ``detail`` and ``status`` in every one."""
    body: dict[str, Any] = {"title": title, "detail": detail, "status": status}
    body.update(extra)
    return body


def unauthenticated() -> dict[str, Any]:
    return problem(401, "Unauthenticated", "You did not pass a valid authentication token")


def throttled(wait_seconds: int) -> dict[str, Any]:
    """Replicate's (Django REST framework's) throttling message, pluralised like DRF."""
    unit = "second" if wait_seconds == 1 else "seconds"
    return problem(
        429,
        "Request was throttled",
        f"Request was throttled. Expected available in {wait_seconds} {unit}.",
    )


def unavailable() -> dict[str, Any]:
    """503 while the API is down (a simulated outage)."""
    return problem(
        503,
        "Service Unavailable",
        "Replicate is temporarily unavailable. Please try again later.",
    )


def validation_failed(fields: list[InvalidField]) -> dict[str, Any]:
    """422 for input that does not match the model's schema."""
    lines = [f"- {f.field}: {f.description}" if f.field else f"- {f.description}" for f in fields]
    return problem(
        422,
        "Input validation failed",
        "\n".join(lines) + "\n",
        invalid_fields=[f.to_dict() for f in fields],
    )


def invalid_version() -> dict[str, Any]:
    return problem(
        422,
        "Invalid version or not permitted",
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
    )


def not_found(detail: str = "Not found.") -> dict[str, Any]:
    return problem(404, "Not found", detail)


def bad_request(detail: str) -> dict[str, Any]:
    return problem(400, "Bad request", detail)


def generic(status: int, detail: str | None = None) -> dict[str, Any]:
    """A problem for an arbitrary status, titled with the standard reason phrase."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return problem(status, title, detail or title)
