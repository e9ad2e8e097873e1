"""Cursor pagination in the shape Replicate uses (``{"previous", "next", "results"}``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Sequenced(Protocol):
    seq: int


T = TypeVar("T", bound=Sequenced)


def encode_cursor(direction: str, seq: int) -> str:
    """An opaque cursor: ``b`` = items older than ``seq``, ``a`` = newer than ``seq``."""
    return base64.urlsafe_b64encode(f"{direction}={seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[str, int] | None:
    """The cursor's direction and position; ``None`` for a missing or unreadable cursor."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, _, seq = base64.urlsafe_b64decode(padded).decode().partition("=")
        if direction in ("a", "b"):
            return direction, int(seq)
    except ValueError:
        pass
    return None


def paginate(
    items: Sequence[T], cursor: tuple[str, int] | None, size: int
) -> tuple[list[T], bool, bool]:
    """A page of newest-first ``items``, and whether newer and older items lie beyond it."""
    if cursor is None:
        page = list(items[:size])
    elif cursor[0] == "b":
        page = [p for p in items if p.seq < cursor[1]][:size]
    else:
        page = [p for p in items if p.seq > cursor[1]][-size:]
    if not page:
        return page, False, False
    newer = any(p.seq > page[0].seq for p in items)
    older = any(p.seq < page[-1].seq for p in items)
    return page, newer, older
