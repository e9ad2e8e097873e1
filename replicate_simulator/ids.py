"""Identifiers and timestamps in the shapes Replicate uses."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime


def new_id() -> str:
    """A 26-character lowercase base32 id, like Replicate's prediction and file ids."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").lower().rstrip("=")


def new_webhook_message_id() -> str:
    """A Standard Webhooks message id (``msg_...``)."""
    return "msg_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def version_id_for(model: str) -> str:
    """A stable 64-hex version id for a simulated model (not Replicate's real one)."""
    return hashlib.sha256(f"replicate-simulator:{model}".encode()).hexdigest()


def isoformat(timestamp: float) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as in ``2023-09-08T16:19:34.765994Z``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_isoformat(value: str) -> float:
    """Parse an ISO 8601 timestamp (``Z`` or offset); naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
