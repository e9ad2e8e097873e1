"""Signed webhooks with odd bodies: schema fuzzing can not sign them, so this does.

Replicate's signature only says who sent a body, not that it is well formed: whatever shape a
signed prediction object has, the webhook answers 200 or a 400 envelope, never a 5xx, and the
promises hold after every one of them.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatars.models import Avatar, Prediction
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar
from tests.avatars.test_webhooks import post_webhook, signed_headers
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = 150
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
STATUSES = st.sampled_from(["starting", "processing", "succeeded", "failed", "canceled", "aborted"])
URLS = st.sampled_from(
    ["http://169.254.169.254/x.png", "http://localhost/x.png", "https://replicate.delivery/x.png"]
)


def prediction_objects(*, ids, statuses):
    """Prediction-shaped dicts with any of the other fields, of any type."""
    return st.fixed_dictionaries(
        {"id": ids, "status": statuses},
        optional={
            "output": st.none() | st.lists(URLS | ANY_JSON, max_size=2) | URLS | ANY_JSON,
            "error": st.none() | st.text(max_size=40) | ANY_JSON,
            "logs": st.text(max_size=40) | ANY_JSON,
            "metrics": st.dictionaries(st.text(max_size=12), ANY_JSON, max_size=2) | ANY_JSON,
            "data_removed": st.booleans() | ANY_JSON,
            "created_at": st.text(max_size=30) | ANY_JSON,
            "completed_at": st.text(max_size=30) | ANY_JSON,
        },
    )


OURS = "<the avatar's prediction>"


def webhook_bodies():
    """For the avatar's own prediction or another's; with a broken id or status; not objects."""
    ids = st.sampled_from([OURS, "someoneelsesprediction0000"])
    return st.one_of(
        prediction_objects(ids=st.just(OURS), statuses=STATUSES),
        prediction_objects(ids=st.just(OURS), statuses=ANY_JSON),
        prediction_objects(ids=ids | ANY_JSON, statuses=STATUSES),
        ANY_JSON,
    )


def running_avatar(owner, session) -> tuple[str, str]:
    """A running avatar and its prediction's id, as its create left them."""
    avatar = make_avatar(owner, session=session, status="running", attempts=1)
    prediction = Prediction.objects.create(
        avatar=avatar, number=1, prediction_id=uuid.uuid4().hex, status="processing"
    )
    return str(avatar.pk), prediction.prediction_id


def test_signed_webhooks_with_any_body_never_fail_the_server(pipeline, alice, report):
    credit_services.grant_credits(user=alice, amount=EXAMPLES + 1)
    first, _ = running_avatar(alice, session=None)
    session = Avatar.objects.get(pk=first).session
    answers: Counter[int] = Counter()
    ended: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payload=webhook_bodies())
    def deliver(payload) -> None:
        # A fresh running avatar each time: one that ended would ignore every later body.
        avatar_id, prediction_id = running_avatar(alice, session)
        if isinstance(payload, dict) and payload.get("id") == OURS:
            payload = {**payload, "id": prediction_id}
        body = json.dumps(payload).encode()
        response = post_webhook(avatar_id, payload, signed_headers(pipeline.webhook_secret, body))
        answers[response.status_code] += 1
        assert response.status_code in (200, 400), (response.status_code, payload)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "validation_error"
        ended[Avatar.objects.get(pk=avatar_id).status] += 1

    deliver()

    assert_invariants()
    report(
        f"signed webhook fuzzing: {answers.total()} bodies, answers {dict(sorted(answers.items()))}"
        f", no 5xx; avatars after them: {dict(sorted(ended.items()))}"
    )
