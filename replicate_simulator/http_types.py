"""Plain request/response values passed between the HTTP server and the route handlers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """A parsed HTTP request (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body decoded as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body or b"null")


@dataclass
class Response:
    """What to send back; ``drop`` closes the connection without answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    note: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status=status,
            body=json.dumps(data).encode(),
            headers={"content-type": "application/json", **(headers or {})},
        )

    @classmethod
    def problem(cls, data: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        """An RFC 7807 error response; the status is taken from the document."""
        return cls(
            status=int(data["status"]),
            body=json.dumps(data).encode(),
            headers={"content-type": "application/problem+json", **(headers or {})},
        )

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        return cls(status=status)

    @classmethod
    def dropped(cls) -> Response:
        return cls(status=0, drop=True)
