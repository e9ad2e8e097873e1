"""Logs of what the simulator received and sent, with secrets redacted."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from .multipart import MultipartError, parse_multipart

REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Lower-cased headers; credentials keep their scheme only (``Bearer [REDACTED]``)."""
    clean = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            clean[key] = f"{scheme} {REDACTED}".strip()
        else:
            clean[key] = value
    return clean


def summarize_body(content_type: str, body: bytes) -> Any:
    """What a test may assert about a body, without secrets or file contents."""
    if not body:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or (not kind and body[:1] in (b"{", b"[")):
        try:
            return _redact_json(json.loads(body))
        except ValueError:
            return {"invalid_json": True, "size": len(body)}
    if kind == "multipart/form-data":
        try:
            parts = parse_multipart(content_type, body)
        except MultipartError:
            return {"invalid_multipart": True, "size": len(body)}
        return {
            "multipart": [
                {
                    "name": p.name,
                    "filename": p.filename,
                    "content_type": p.content_type,
                    "size": len(p.data),
                }
                for p in parts
            ]
        }
    return {"content_type": kind or None, "size": len(body)}


def _redact_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if k == "openai_api_key" else _redact_json(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    return value


class EventLog:
    """An append-only, thread-safe list of JSON-friendly entries with sequence numbers."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._seq = itertools.count(1)
        self._max = max_entries

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            entry = {"seq": next(self._seq), **entry}
            self._entries.append(entry)
            if len(self._entries) > self._max:
                del self._entries[: len(self._entries) - self._max]
            return entry

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries if e["seq"] > since]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
