"""Replicate's webhooks: signed, de-duplicated, applied like polls, racing polls safely.

Forged, tampered, stale and replayed deliveries: tests/reliability/test_bad_input.py; the
same delivery at once and deliveries racing a poll: tests/reliability/test_races.py.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from django.test import Client
from django.utils.dateparse import parse_datetime

from avatars.models import Avatar, WebhookDelivery
from credits import services as credit_services
from replicate_simulator.signing import sign
from replicate_simulator.testing import wait_for
from tests.avatars.test_pipeline import creates, ledger_for, submit, wait_until_finished

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK_PATH = "/api/v1/webhooks/replicate/"


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=5)
    return alice


@pytest.fixture
def webhooks_on(pipeline, live_server, settings):
    """Webhooks to a live server; polls slow enough that only a webhook can finish quickly."""
    settings.PUBLIC_BASE_URL = live_server.url
    settings.AVATAR_POLL_FIRST_DELAY = 5
    settings.AVATAR_POLL_INITIAL_DELAY = 5
    settings.AVATAR_POLL_MAX_DELAY = 15
    return pipeline


def signed_headers(secret: str, body: bytes, *, message_id: str | None = None, age: int = 0):
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) - age
    return {
        "HTTP_WEBHOOK_ID": message_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(timestamp),
        "HTTP_WEBHOOK_SIGNATURE": sign(secret, message_id, timestamp, body),
    }


def post_webhook(avatar_id, payload: dict, headers: dict):
    body = json.dumps(payload).encode()
    return Client().post(
        f"{WEBHOOK_PATH}?avatar={avatar_id}", body, content_type="application/json", **headers
    )


def test_with_webhooks_on_an_avatar_finishes_within_a_second_of_the_prediction(
    webhooks_on, funded_alice, alice_client, live_server
):
    avatar = submit(alice_client)

    done = wait_until_finished(alice_client, avatar["id"], timeout=15)

    assert done["status"] == "succeeded"
    [create] = creates(webhooks_on)
    assert create["body"]["webhook"] == (
        f"{live_server.url}/api/v1/webhooks/replicate/?avatar={avatar['id']}"
    )
    assert create["body"]["webhook_events_filter"] == ["completed"]
    [simulated] = webhooks_on.predictions()
    finished_at = Avatar.objects.get(pk=avatar["id"]).completed_at
    lag = (finished_at - parse_datetime(simulated["planned_completion_at"])).total_seconds()
    assert lag < 1.0, f"finished {lag:.2f} s after the prediction"
    deliveries = webhooks_on.webhook_deliveries(prediction_id=simulated["id"])
    assert [d["status_code"] for d in deliveries] == [200]


def test_a_webhook_delivered_twice_by_replicate_makes_one_transition(
    webhooks_on, funded_alice, alice_client
):
    webhooks_on.content_policy()
    webhooks_on.webhook_twice()

    done = wait_until_finished(alice_client, submit(alice_client)["id"], timeout=15)

    assert done["error"]["code"] == "content_policy"
    wait_for(lambda: len(webhooks_on.webhook_deliveries()) == 2, message="both deliveries")
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]
    assert WebhookDelivery.objects.count() == 1


def test_polling_still_finishes_when_the_webhook_never_comes(
    webhooks_on, funded_alice, alice_client, settings
):
    settings.AVATAR_POLL_FIRST_DELAY = 0.2
    settings.AVATAR_POLL_INITIAL_DELAY = 0.2
    settings.AVATAR_POLL_MAX_DELAY = 0.5
    webhooks_on.webhook_never()

    done = wait_until_finished(alice_client, submit(alice_client)["id"], timeout=15)

    assert done["status"] == "succeeded"
    assert webhooks_on.webhook_deliveries() == []


def wait_until_applied(avatar_id) -> Avatar:
    """The worker's step, woken by a webhook, has applied what it reported."""
    return wait_for(
        lambda: (avatar := Avatar.objects.get(pk=avatar_id)).is_terminal and avatar,
        timeout=10,
        message="the reported state applied",
    )


def _finished_prediction(pipeline, alice_client, settings) -> tuple[str, dict]:
    """An avatar whose prediction failed at Replicate but which we have not heard about yet."""
    settings.AVATAR_POLL_FIRST_DELAY = 30
    settings.AVATAR_POLL_INITIAL_DELAY = 30
    settings.AVATAR_POLL_MAX_DELAY = 30
    pipeline.content_policy()
    pipeline.webhook_never()
    avatar = submit(alice_client)
    prediction = wait_for(
        lambda: Avatar.objects.get(pk=avatar["id"]).predictions.first(), timeout=10
    )

    def failed_prediction_json():
        body = httpx.get(
            f"{pipeline.base_url}/v1/predictions/{prediction.prediction_id}",
            headers={"Authorization": f"Bearer {pipeline.token}"},
        ).json()
        return body if body["status"] == "failed" else None

    return avatar["id"], wait_for(failed_prediction_json, timeout=10)


def test_a_webhook_for_another_prediction_of_the_avatar_is_ignored(
    pipeline, funded_alice, alice_client, settings
):
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    payload = {**payload, "id": "someoneelsesprediction0000"}
    headers = signed_headers(pipeline.webhook_secret, json.dumps(payload).encode())

    assert post_webhook(avatar_id, payload, headers).status_code == 200
    assert Avatar.objects.get(pk=avatar_id).status == "running"
    assert ledger_for(avatar_id) == [("spend", -1)]
