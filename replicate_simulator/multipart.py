"""Minimal ``multipart/form-data`` parsing with the standard library's email parser."""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesParser


@dataclass(frozen=True)
class Part:
    """One form field."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a form body into its parts (file and plain fields alike)."""
    if (
        not content_type.lower().startswith("multipart/form-data")
        or "boundary=" not in content_type
    ):
        raise MultipartError("Content-Type must be multipart/form-data with a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise MultipartError("Body is not multipart")
    parts = []
    for sub in message.iter_parts():
        name = sub.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = sub.get_payload(decode=True) or b""
        has_type = sub.get("content-type") is not None
        parts.append(
            Part(
                name=str(name),
                filename=sub.get_filename(),
                content_type=sub.get_content_type() if has_type else None,
                data=payload,
            )
        )
    return parts
