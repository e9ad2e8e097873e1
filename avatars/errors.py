"""Why a generation failed: stable codes, user-facing messages, and whether to try again.

Classification reads the error texts Replicate and OpenAI really send (DESIGN.md §5):
moderation refusals, Replicate's E-codes, OpenAI key and quota errors, provider outages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorKind:
    code: str
    message: str
    # Whether a new attempt (another prediction, or the same call again) may succeed.
    retryable: bool
    # Whether operators should hear about it at once (issue 5's alert rules read this).
    alerts: bool = False


CONTENT_POLICY = ErrorKind(
    "content_policy",
    "The image could not be made because the model's safety system refused this photo. "
    "Try a different selfie.",
    retryable=False,
)
PROVIDER_RATE_LIMITED = ErrorKind(
    "provider_rate_limited",
    "The image service is busy right now. Please try again in a few minutes.",
    retryable=True,
)
PROVIDER_UNAVAILABLE = ErrorKind(
    "provider_unavailable",
    "The image service is having trouble right now. Please try again later.",
    retryable=True,
)
PROVIDER_AUTH = ErrorKind(
    "provider_auth",
    "The image service is not available because of a configuration problem on our side. "
    "We have been notified.",
    retryable=False,
    alerts=True,
)
INVALID_REQUEST = ErrorKind(
    "invalid_request",
    "The image service could not accept this request.",
    retryable=False,
    alerts=True,
)
GENERATION_FAILED = ErrorKind(
    "generation_failed",
    "The image could not be generated. Please try again.",
    retryable=False,
)
GENERATION_FAILED_TRANSIENT = ErrorKind(
    "generation_failed",
    GENERATION_FAILED.message,
    retryable=True,
)
EMPTY_OUTPUT = ErrorKind(
    "empty_output",
    "The image service finished without producing an image. Please try again.",
    retryable=False,
)
TIMEOUT = ErrorKind(
    "timeout",
    "The image took too long to generate and was stopped. Please try again.",
    retryable=False,
)
OUTPUT_UNAVAILABLE = ErrorKind(
    "output_unavailable",
    "The finished image could not be retrieved. Please try again.",
    retryable=False,
)
CANCELED = ErrorKind("canceled", "The generation was canceled.", retryable=False)
INTERNAL = ErrorKind(
    "internal",
    "Something went wrong on our side. Please try again.",
    retryable=False,
    alerts=True,
)

ALL_KINDS = {
    kind.code: kind
    for kind in [
        CONTENT_POLICY,
        PROVIDER_RATE_LIMITED,
        PROVIDER_UNAVAILABLE,
        PROVIDER_AUTH,
        INVALID_REQUEST,
        GENERATION_FAILED,
        EMPTY_OUTPUT,
        TIMEOUT,
        OUTPUT_UNAVAILABLE,
        CANCELED,
        INTERNAL,
    ]
}

# Checked in order: the first pattern found in the error text decides.
_PREDICTION_ERROR_PATTERNS: list[tuple[re.Pattern[str], ErrorKind]] = [
    (
        re.compile(
            r"moderation_blocked|safety[ _]system|safety_violations|content_policy_violation"
            r"|flagged by|rejected as a result of our safety",
            re.I,
        ),
        CONTENT_POLICY,
    ),
    (
        re.compile(
            r"incorrect api key|invalid_api_key|invalid api key|no api key|api key provided"
            r"|insufficient_quota|billing_hard_limit|exceeded your current quota"
            r"|organization must be verified|\b401\b.*unauthori[sz]ed",
            re.I,
        ),
        PROVIDER_AUTH,
    ),
    (re.compile(r"rate[ _]limit|too many requests|\b429\b", re.I), PROVIDER_RATE_LIMITED),
    (
        re.compile(
            r"\bE6716\b|\b50[0234]\b|internal server error|bad gateway|service unavailable"
            r"|timed? ?out|timeout|connection (reset|refused|error)|overloaded|server_error",
            re.I,
        ),
        PROVIDER_UNAVAILABLE,
    ),
    (
        re.compile(r"\bE1000\b|unknown reason|temporary issue|code: PA\b|interrupted", re.I),
        GENERATION_FAILED_TRANSIENT,
    ),
    (
        re.compile(r"invalid_request_error|invalid input|invalid_fields|must be one of", re.I),
        INVALID_REQUEST,
    ),
]


def classify_prediction_error(error: object) -> ErrorKind:
    """The kind of a failed prediction, from its `error` field (a string, or None)."""
    text = str(error or "")
    for pattern, kind in _PREDICTION_ERROR_PATTERNS:
        if pattern.search(text):
            return kind
    return GENERATION_FAILED
