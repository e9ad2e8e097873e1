"""Which avatar a log line is about, added to every line logged while working on it.

Pipeline code binds the avatar id, prediction id, attempt and error code once; a logging filter
copies them onto each record, so JSON logs carry them without every call repeating them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

FIELDS = ("avatar_id", "prediction_id", "attempt", "error_code")

# Never mutated in place: every change sets a new mapping, so an immutable default is shared safely.
_context: ContextVar[Mapping[str, object]] = ContextVar(
    "avatar_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields) -> Iterator[None]:
    """Bind fields for the lines logged inside this block (and only there)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields) -> None:
    """Add fields to the current block's context (a prediction id once it is known, say)."""
    _context.set({**_context.get(), **fields})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                value = context.get(name)
                setattr(record, name, str(value) if value is not None else None)
        return True
