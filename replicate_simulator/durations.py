"""Go-style duration strings (``1m30s``, ``250ms``), as Replicate's ``Cancel-After`` takes them."""

from __future__ import annotations

import math
import re

# Go's time.ParseDuration units, in seconds.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_BARE = re.compile(r"\d+\.?\d*|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a Go duration (``30s``, ``1h``, ``1.5s``) or a bare number of seconds.

    Bare numbers are accepted because clients send them and a simulator that refused them
    would only teach a client to send something Replicate may not take either. Negative
    values and anything else raise ``ValueError``.
    """
    value = text.strip()
    if _BARE.fullmatch(value):
        return _finite(float(value), text)
    if not value:
        raise ValueError("empty duration")
    seconds = 0.0
    position = 0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"invalid duration {text!r}")
    return _finite(seconds, text)


def _finite(seconds: float, text: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}")
    return seconds
