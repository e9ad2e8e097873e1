"""Unit tests for avatars.errors: the error kinds and how real provider error texts classify."""

from __future__ import annotations

import re

import pytest

from avatars import errors
from avatars.errors import ALL_KINDS, ErrorKind, classify_prediction_error

# The codes DESIGN.md §6 promises, in its order.
DESIGN_CODES = [
    "content_policy",
    "provider_rate_limited",
    "provider_unavailable",
    "provider_auth",
    "invalid_request",
    "generation_failed",
    "empty_output",
    "timeout",
    "output_unavailable",
    "canceled",
    "internal",
]

# --- Error texts as Replicate's gpt-image-1 predictions really report them -------------------

MODERATION_AS_A_RESULT = (
    "Error code: 400 - {'error': {'message': 'Your request was rejected as a result of our "
    "safety system. Your request may contain content that is not allowed by our safety "
    "system.', 'type': 'user_error', 'param': None, 'code': 'moderation_blocked'}}"
)
MODERATION_SAFETY_VIOLATIONS = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID req_0123456789abcdef0123456789abcdef. "
    "safety_violations=[sexual]. (type: image_generation_user_error, code: moderation_blocked)"
)
MODERATION_VIOLATIONS_ONLY = "Image generation failed: safety_violations=[violence]"
INCORRECT_API_KEY = (
    "Error code: 401 - {'error': {'message': 'Incorrect API key provided: sk-proj-****abcd. "
    "You can find your API key at https://platform.openai.com/account/api-keys.', "
    "'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}"
)
INSUFFICIENT_QUOTA = (
    "Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check "
    "your plan and billing details. For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors.', "
    "'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}"
)
BILLING_HARD_LIMIT = (
    "Error code: 400 - {'error': {'message': 'Billing hard limit has been reached', "
    "'type': 'invalid_request_error', 'param': None, 'code': 'billing_hard_limit_reached'}}"
)
ORGANIZATION_NOT_VERIFIED = (
    "Error code: 403 - {'error': {'message': 'Your organization must be verified to use the "
    "model `gpt-image-1`. Please go to: https://platform.openai.com/settings/organization/"
    "general and click on Verify Organization.', 'type': 'invalid_request_error'}}"
)
OPENAI_RATE_LIMIT = (
    "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-image-1 in organization "
    "org-AbCdEf123 on images per minute (IPM): Limit 5, Used 5, Requested 1. Please try again "
    "in 12s. Visit https://platform.openai.com/account/rate-limits to learn more.', "
    "'type': 'requests', 'param': None, 'code': 'rate_limit_exceeded'}}"
)
# As the prediction's error field often carries it: the message alone, without a status.
OPENAI_RATE_LIMIT_MESSAGE = (
    "Rate limit reached for gpt-image-1 in organization org-AbCdEf123 on images per minute "
    "(IPM): Limit 5, Used 5, Requested 1. Please try again in 12s."
)
TOO_MANY_REQUESTS = "429 Too Many Requests"
REPLICATE_E1000 = (
    "Prediction failed for an unknown reason. It might have been a temporary problem, "
    "please try again. (E1000)"
)
REPLICATE_E6716 = "Director: unexpected error handling prediction (E6716)"
BAD_GATEWAY = "502 Bad Gateway"
OPENAI_SERVER_ERROR = (
    "Error code: 500 - {'error': {'message': 'The server had an error while processing your "
    "request. Sorry about that!', 'type': 'server_error', 'param': None, 'code': None}}"
)
SERVICE_UNAVAILABLE = "Error code: 503 - Service Unavailable"
REQUEST_TIMED_OUT = "Request timed out."
CONNECTION_ERROR = "Connection error."
INVALID_REQUEST_ERROR = (
    "Error code: 400 - {'error': {'message': \"Invalid value: 'huge'. Supported values are: "
    "'low', 'medium', 'high', and 'auto'.\", 'type': 'invalid_request_error', "
    "'param': 'quality', 'code': 'invalid_value'}}"
)
INVALID_INPUT = '- input.aspect_ratio: aspect_ratio must be one of the following: "1:1"'


# --- The kinds themselves --------------------------------------------------------------------


def test_every_code_the_design_lists_is_a_kind_and_there_are_no_others() -> None:
    # Given the codes of DESIGN.md §6
    # Then ALL_KINDS holds exactly those, each under its own code
    assert sorted(ALL_KINDS) == sorted(DESIGN_CODES)
    for code, kind in ALL_KINDS.items():
        assert isinstance(kind, ErrorKind)
        assert kind.code == code


@pytest.mark.parametrize("code", DESIGN_CODES)
def test_every_kind_has_a_user_message_that_leaks_no_internals(code: str) -> None:
    # Given a kind users may see
    message = ALL_KINDS[code].message

    # Then its message is a sentence for people, naming no vendor, code, status or secret
    assert message.strip()
    assert message[0].isupper() and message.rstrip().endswith(".")
    forbidden = re.compile(
        r"replicate|openai|gpt|http|api|token|secret|key|webhook|traceback|exception|celery"
        r"|\bE\d{3,4}\b|\b[45]\d\d\b|sk-|r8_|[{}<>_]",
        re.I,
    )
    assert not forbidden.search(message), message


def test_the_transient_generation_failure_looks_the_same_to_users_but_may_be_retried() -> None:
    # Given the two generation_failed variants
    # Then users see the same code and message, and only the transient one is retried
    assert errors.GENERATION_FAILED_TRANSIENT.code == errors.GENERATION_FAILED.code
    assert errors.GENERATION_FAILED_TRANSIENT.message == errors.GENERATION_FAILED.message
    assert errors.GENERATION_FAILED_TRANSIENT.retryable is True
    assert errors.GENERATION_FAILED.retryable is False
    # And the code's canonical kind, the one looked up by code, is the final one
    assert ALL_KINDS["generation_failed"] is errors.GENERATION_FAILED


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("content_policy", False),
        ("provider_rate_limited", True),
        ("provider_unavailable", True),
        ("provider_auth", False),
        ("invalid_request", False),
        ("generation_failed", False),
        ("empty_output", False),
        ("timeout", False),
        ("output_unavailable", False),
        ("canceled", False),
        ("internal", False),
    ],
)
def test_only_provider_throttling_and_outages_are_retryable_kinds(
    code: str, retryable: bool
) -> None:
    assert ALL_KINDS[code].retryable is retryable


def test_operators_are_alerted_for_configuration_and_internal_problems_only() -> None:
    alerting = {code for code, kind in ALL_KINDS.items() if kind.alerts}
    assert alerting == {"provider_auth", "invalid_request", "internal"}


# --- Classification of real error texts ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [MODERATION_AS_A_RESULT, MODERATION_SAFETY_VIOLATIONS, MODERATION_VIOLATIONS_ONLY],
    ids=["rejected-as-a-result", "safety-violations-with-code", "safety-violations-only"],
)
def test_a_moderation_refusal_is_content_policy_and_not_retried(text: str) -> None:
    # When a prediction failed with OpenAI's moderation refusal
    kind = classify_prediction_error(text)

    # Then it is the content policy, and asking again would be refused again
    assert kind is errors.CONTENT_POLICY
    assert kind.retryable is False


def test_a_moderation_refusal_wins_over_numbers_in_the_same_text() -> None:
    # Given a refusal whose request id happens to contain "500" and whose text says "429"
    text = "Error code: 429 - request req_500 rejected as a result of our safety system"

    # Then the refusal decides
    assert classify_prediction_error(text) is errors.CONTENT_POLICY


@pytest.mark.parametrize(
    "text",
    [INCORRECT_API_KEY, INSUFFICIENT_QUOTA, BILLING_HARD_LIMIT, ORGANIZATION_NOT_VERIFIED],
    ids=["incorrect-api-key", "insufficient-quota", "billing-hard-limit", "org-not-verified"],
)
def test_an_openai_key_or_billing_problem_is_provider_auth_and_alerts(text: str) -> None:
    # When the OpenAI key we pass is wrong, out of quota or not allowed the model
    kind = classify_prediction_error(text)

    # Then it is our configuration: not retried, operators alerted
    assert kind is errors.PROVIDER_AUTH
    assert kind.retryable is False
    assert kind.alerts is True


def test_exceeded_quota_is_not_mistaken_for_a_rate_limit_despite_its_429() -> None:
    # Given OpenAI's quota error, which arrives with status 429 like a rate limit
    # Then it is not a throttle that waiting would cure
    assert classify_prediction_error(INSUFFICIENT_QUOTA) is not errors.PROVIDER_RATE_LIMITED
    assert classify_prediction_error(INSUFFICIENT_QUOTA).retryable is False


@pytest.mark.parametrize(
    "text",
    [OPENAI_RATE_LIMIT, OPENAI_RATE_LIMIT_MESSAGE, TOO_MANY_REQUESTS],
    ids=["openai-429", "openai-message-only", "too-many-requests"],
)
def test_an_openai_rate_limit_is_provider_rate_limited_and_retried(text: str) -> None:
    kind = classify_prediction_error(text)
    assert kind is errors.PROVIDER_RATE_LIMITED
    assert kind.retryable is True


def test_replicates_unknown_e1000_failure_is_generation_failed_and_retried() -> None:
    # When Replicate reports its uncategorised E1000 failure
    kind = classify_prediction_error(REPLICATE_E1000)

    # Then users see generation_failed, and another attempt is made
    assert kind.code == "generation_failed"
    assert kind.retryable is True


@pytest.mark.parametrize(
    "text",
    [
        REPLICATE_E6716,
        BAD_GATEWAY,
        OPENAI_SERVER_ERROR,
        SERVICE_UNAVAILABLE,
        REQUEST_TIMED_OUT,
        CONNECTION_ERROR,
        "upstream connect error or disconnect/reset before headers. reset reason: connection reset",
        "The engine is currently overloaded, please try again later",
    ],
    ids=[
        "e6716",
        "502",
        "openai-500",
        "503",
        "timed-out",
        "connection-error",
        "connection-reset",
        "overloaded",
    ],
)
def test_a_provider_outage_is_provider_unavailable_and_retried(text: str) -> None:
    kind = classify_prediction_error(text)
    assert kind is errors.PROVIDER_UNAVAILABLE
    assert kind.retryable is True


@pytest.mark.parametrize("text", [INVALID_REQUEST_ERROR, INVALID_INPUT])
def test_an_invalid_request_is_invalid_request_and_not_retried(text: str) -> None:
    kind = classify_prediction_error(text)
    assert kind is errors.INVALID_REQUEST
    assert kind.retryable is False
    assert kind.alerts is True


@pytest.mark.parametrize(
    "error",
    [None, "", "   ", "Something odd happened", "Image size: 1024x1024", 0],
    ids=["none", "empty", "blank", "unknown-text", "numbers-that-are-not-statuses", "zero"],
)
def test_a_missing_or_unknown_error_is_generation_failed_and_not_retried(error: object) -> None:
    # When the failed prediction says nothing we recognise
    kind = classify_prediction_error(error)

    # Then it is the final generation_failed: retrying blindly could loop on a real defect
    assert kind is errors.GENERATION_FAILED
    assert kind.retryable is False


def test_classification_ignores_case() -> None:
    assert classify_prediction_error("MODERATION_BLOCKED") is errors.CONTENT_POLICY
    assert classify_prediction_error("bad gateway") is errors.PROVIDER_UNAVAILABLE


def test_a_non_string_error_is_classified_by_its_text() -> None:
    # Given an error field that is an object rather than a string
    error = {"code": "moderation_blocked", "message": "rejected"}

    # Then its text still decides
    assert classify_prediction_error(error) is errors.CONTENT_POLICY


def test_an_interrupted_prediction_is_worth_another_attempt():
    kind = classify_prediction_error("Prediction interrupted; please retry (code: PA)")

    assert (kind.code, kind.retryable) == ("generation_failed", True)
