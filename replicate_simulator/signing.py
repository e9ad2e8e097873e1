"""Standard Webhooks signatures, as Replicate signs its webhook requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """A fresh ``whsec_<base64>`` signing secret."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the decoded secret."""
    if not secret.startswith(PREFIX):
        raise ValueError("webhook secret must start with whsec_")
    key = base64.b64decode(secret[len(PREFIX) :])
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
