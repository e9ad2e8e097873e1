"""Schema fuzzing: every operation of /api/schema/, sent to the app in-process by schemathesis.

Each operation gets the schema's examples, schemathesis' coverage cases (boundary values,
missing parameters, wrong methods and content types) and MAX_EXAMPLES generated cases, both
schema-valid and schema-breaking: as a user with credits, a selfie session and a finished
avatar, and again anonymously. A response passes when it is not a 5xx and conforms to the
schema (a documented status code and content type, a body matching its documented schema) and
passes every other built-in check of schemathesis: schema-breaking data refused, schema-valid
data not refused as invalid, authentication not ignored, and so on.

Failures are collected over the whole run instead of stopping at the first, so one run lists
every problem. Generation is derandomized, with a fixed number of examples: the same requests
every run.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import hypothesis
import pytest
import schemathesis
from django.core.signals import got_request_exception, request_started
from hypothesis import HealthCheck, Phase
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle
from schemathesis import Case
from schemathesis.core.failures import Failure, FailureGroup, ServerError
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)

from avatars.models import Avatar
from config.wsgi import application
from credits import services as credit_services
from tests.avatars.test_pipeline import submit, wait_until_finished
from tests.avatars.test_recovery import wait_until_all_finished
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)

# Generated cases per operation, besides its examples and coverage cases.
MAX_EXAMPLES = 100
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # each case is a request through the whole app: its time is no finding
    # Failures are recorded, never raised to Hypothesis, so there is nothing to shrink.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# Some refusals of schema-valid requests depend on what only the server knows, as a 409 does:
# wrong credentials (DRF's sign-in answers 400; tests/test_api_basics.py holds it), a file that
# is not a photo (400 `invalid_selfie`), and for a submission the balance (402), the selfie's
# age (410) and an Idempotency-Key used before with another body (422). The schema documents
# them; the positive-data check expects them on these operations only. Every other check keeps
# its defaults. Failure reports show requests whole: nothing here is a secret to mask.
CONFIG = """
[output.sanitization]
enabled = false

[[operations]]
include-name = ["POST /api/v1/auth/token/", "POST /api/v1/sessions/"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"
]

[[operations]]
include-name = "POST /api/v1/avatars/"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "402", "403", "404", "409", "410", "422", "429", "5xx"
]
"""
# Any valid Standard Webhooks secret: fuzzed webhooks are never signed with it.
WEBHOOK_SECRET = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="


@dataclass
class Findings:
    """What one run found: each kind of failure once per operation, each traceback once."""

    operations: int = 0
    requests: int = 0
    server_errors: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)  # each once, with where it was

    def record(self, case: Case, failure: Failure) -> None:
        key = f"{case.operation.label}: {failure.title}"
        found = self.server_errors if isinstance(failure, ServerError) else self.violations
        found.setdefault(key, f"{failure}\n{case.as_curl_command()}")

    def summary(self, who: str) -> str:
        return (
            f"schema fuzzing ({who}): {self.operations} operations, {self.requests} requests, "
            f"{len(self.server_errors)} server errors, {len(self.violations)} schema violations"
        )

    def problems(self) -> str:
        found = {**self.server_errors, **self.violations}
        found.update({f"exception in {where}": text for text, where in self.tracebacks.items()})
        return "\n\n".join(f"{key}\n{detail}" for key, detail in found.items())

    def assert_none(self) -> None:
        assert not (self.server_errors or self.violations or self.tracebacks), self.problems()


@pytest.fixture
def findings() -> Iterator[Findings]:
    """Counts the requests the app receives, and keeps the traceback of any it fails on."""
    found = Findings()

    def count(**kwargs) -> None:
        found.requests += 1

    def keep(request=None, **kwargs) -> None:
        where = f"{request.method} {request.get_full_path()}" if request else "a request"
        found.tracebacks.setdefault(traceback.format_exc(), where)

    request_started.connect(count, dispatch_uid="api-fuzzing-count")
    got_request_exception.connect(keep, dispatch_uid="api-fuzzing-keep")
    yield found
    request_started.disconnect(dispatch_uid="api-fuzzing-count")
    got_request_exception.disconnect(dispatch_uid="api-fuzzing-keep")


@pytest.fixture
def fuzzable(monkeypatch, settings) -> None:
    """Settings that let each request reach what it fuzzes, quickly.

    Throttles far above what the fuzzer sends, so 429 hides nothing (they still run, and their
    429 is documented; ScopedRateThrottle reads its rates once, out of reach of `settings`).
    A fast password hasher: every sign-in attempt hashes a password, even for an unknown user,
    and PBKDF2 would take most of the run. A webhook secret, so the webhook checks signatures
    rather than asking Replicate for its secret.
    """
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"submissions": "100000/min", "uploads": "100000/min", "auth": "100000/min"},
    )
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.REPLICATE_WEBHOOK_SECRET = WEBHOOK_SECRET


@pytest.fixture
def alice_with_data(pipeline, alice, alice_client, settings, fuzzable) -> dict[str, str]:
    """Alice with credits, a selfie session and a finished avatar: real ids to fuzz with."""
    # Each submission is accepted or refused for what it is, never for how fast the worker
    # finished the ones before it: the same answers every run.
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 1000
    credit_services.grant_credits(user=alice, amount=500)
    avatar = wait_until_finished(alice_client, submit(alice_client)["id"], timeout=30)
    assert avatar["status"] == "succeeded", avatar
    return {
        "session_id": avatar["session"],
        "avatar_id": avatar["id"],
        "token": avatar["image_url"].rstrip("/").rsplit("/", 1)[-1],
        "key": Token.objects.get(user=alice).key,
    }


def load_schema():
    return schemathesis.openapi.from_wsgi(
        "/api/schema/", application, config=schemathesis.Config.from_str(CONFIG)
    )


def fuzz(schema, found: Findings, *, headers: dict | None = None, known: dict | None = None):
    # The erasing operations (DELETE) last, so the others still find the user's data.
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in sorted(operations, key=lambda operation: operation.method.upper() == "DELETE"):
        fuzz_operation(operation, found, headers=headers, known=known)
        found.operations += 1


def fuzz_operation(operation, found: Findings, *, headers: dict | None, known: dict | None):
    """Examples, coverage cases and generated cases, as schemathesis' pytest integration runs
    them, but with our settings and without stopping at a failure. `create_test` is the builder
    that integration uses; it is not public API, which is one reason schemathesis is pinned.
    """
    turns = itertools.count()

    @FUZZ_SETTINGS
    def check(case: Case) -> None:
        # Every other schema-valid case is about the user's own session and avatar.
        if known and case.meta.generation.mode.is_positive and next(turns) % 2:
            with_real_ids(case, known)
        try:
            case.call_and_validate(headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                found.record(case, failure)

    config = HypothesisTestConfig(project=operation.schema.config, modes=list(HypothesisTestMode))
    create_test(operation=operation, test_func=check, config=config)()


def with_real_ids(case: Case, known: dict[str, str]) -> None:
    for name in ("session_id", "avatar_id", "token"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = known[name]
    if isinstance(case.body, dict) and "session" in case.body:
        case.body["session"] = known["session_id"]
    if case.query and "session" in case.query:
        case.query["session"] = known["session_id"]


def test_every_operation_as_a_user_answers_as_documented(alice_with_data, findings, report):
    schema = load_schema()

    fuzz(
        schema,
        findings,
        headers={"Authorization": f"Token {alice_with_data['key']}"},
        known=alice_with_data,
    )

    wait_until_all_finished(Avatar.objects.values_list("pk", flat=True))
    report(findings.summary("as a user"))
    findings.assert_none()
    assert_invariants()


def test_every_operation_anonymously_answers_as_documented(findings, report, fuzzable):
    schema = load_schema()

    fuzz(schema, findings)

    report(findings.summary("anonymous"))
    findings.assert_none()
    assert_invariants()
