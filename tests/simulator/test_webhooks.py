"""Signed webhooks: events filter, exact URL, retries of the final event only."""

from __future__ import annotations

import json
import socket

import pytest
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from tests.simulator.helpers import create, model_input


def _wait_deliveries(sim, prediction_id, count):
    """Wait until the simulator has logged ``count`` attempts (logged after the response)."""
    return sim.wait_for(
        lambda: len(d := sim.webhook_deliveries(prediction_id=prediction_id)) >= count and d,
        message=f"{count} webhook deliveries",
    )


def _events(receiver):
    return [json.loads(r.body)["status"] for r in receiver.received]


def test_completed_webhook_is_signed_and_validates_with_the_official_client(
    client, replicate_simulator, webhook_receiver
):
    url = webhook_receiver.url("/api/v1/webhooks/replicate/?avatar=1b4e28ba-2fa1-11d2-883f")
    prediction = client.models.predictions.create(
        model="openai/gpt-image-1",
        input=model_input(),
        webhook=url,
        webhook_events_filter=["completed"],
    )

    received = replicate_simulator.wait_for(lambda: webhook_receiver.received, message="webhook")[0]

    assert received.path == "/api/v1/webhooks/replicate/?avatar=1b4e28ba-2fa1-11d2-883f"
    secret = WebhookSigningSecret(key=client.webhooks.default.secret().key)
    assert (
        Webhooks.validate(headers=received.headers, body=received.text, secret=secret, tolerance=60)
        is None
    )
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=received.headers, body=received.text + " ", secret=secret)
    assert received.headers["webhook-id"].startswith("msg_")
    payload = json.loads(received.body)
    assert payload["id"] == prediction.id
    assert payload["status"] == "succeeded"
    assert payload == client.predictions.get(prediction.id).dict() | {
        "data_removed": False,
        "source": "api",
    }


def test_all_events_are_sent_by_default(replicate_simulator, webhook_receiver):
    replicate_simulator.configure(latency=0.4, start_delay=0.1)
    created = create(replicate_simulator, webhook=webhook_receiver.url()).json()

    deliveries = _wait_deliveries(replicate_simulator, created["id"], 3)

    # start and logs go out 0.1 s apart from a pool, so only the last one's place is certain.
    assert sorted(_events(webhook_receiver)[:2]) == ["processing", "starting"]
    assert _events(webhook_receiver)[2] == "succeeded"
    assert sorted((d["event"], d["status_code"], d["attempt"]) for d in deliveries) == [
        ("completed", 200, 1),
        ("logs", 200, 1),
        ("start", 200, 1),
    ]
    assert deliveries[-1]["event"] == "completed"
    assert {d["url"] for d in deliveries} == {webhook_receiver.url()}


def test_events_filter_limits_what_is_sent(replicate_simulator, webhook_receiver):
    create(replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["start"])
    create(replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["output"])

    deliveries = replicate_simulator.wait_for(
        lambda: len(d := replicate_simulator.webhook_deliveries()) == 2 and d, message="webhooks"
    )
    assert sorted(d["event"] for d in deliveries) == ["output", "start"]
    output = next(d for d in deliveries if d["event"] == "output")
    assert output["payload"]["status"] == "succeeded"
    assert output["payload"]["output"]


def test_final_webhook_is_retried_with_backoff_until_it_succeeds(
    replicate_simulator, webhook_receiver
):
    webhook_receiver.fail_next(2, status=503)
    created = create(
        replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["completed"]
    ).json()

    attempts = _wait_deliveries(replicate_simulator, created["id"], 3)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 503), (2, 503), (3, 200)]
    assert len({a["webhook_id"] for a in attempts}) == 1
    assert len({r.body for r in webhook_receiver.received}) == 1


def test_connection_errors_are_retried_and_then_given_up(replicate_simulator):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{placeholder.getsockname()[1]}/hook"
    create(replicate_simulator, webhook=dead_url, webhook_events_filter=["completed"])

    attempts = replicate_simulator.wait_for(
        lambda: (d := replicate_simulator.webhook_deliveries()) and len(d) == 4 and d,
        message="all attempts",
    )

    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert all(a["status_code"] is None and a["error"] for a in attempts)
    assert replicate_simulator.server.simulator.scheduler.pending() == 0


def test_intermediate_events_are_not_retried(replicate_simulator, webhook_receiver):
    replicate_simulator.configure(latency=0.4, start_delay=0.1)
    webhook_receiver.fail_next(2, status=500)  # start and logs fail
    created = create(replicate_simulator, webhook=webhook_receiver.url()).json()

    attempts = _wait_deliveries(replicate_simulator, created["id"], 3)
    assert sorted((a["event"], a["status_code"]) for a in attempts) == [
        ("completed", 200),
        ("logs", 500),
        ("start", 500),
    ]


def test_canceled_prediction_sends_its_completed_webhook(replicate_simulator, webhook_receiver):
    replicate_simulator.configure(latency=30)
    created = create(
        replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["completed"]
    ).json()

    replicate_simulator.server.simulator.cancel_prediction(created["id"])

    received = replicate_simulator.wait_for(lambda: webhook_receiver.received, message="webhook")
    assert json.loads(received[0].body)["status"] == "canceled"


def test_webhook_never_sent(replicate_simulator, webhook_receiver):
    replicate_simulator.webhook_never()
    silent = create(replicate_simulator, webhook=webhook_receiver.url()).json()
    loud = create(
        replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["completed"]
    ).json()

    replicate_simulator.wait_for(lambda: webhook_receiver.received, message="second webhook")

    assert [json.loads(r.body)["id"] for r in webhook_receiver.received] == [loud["id"]]
    assert replicate_simulator.webhook_deliveries(prediction_id=silent["id"]) == []
    assert replicate_simulator.predictions()[0]["scenarios"] == ["webhook_never"]


def test_webhook_sent_twice(replicate_simulator, webhook_receiver):
    replicate_simulator.webhook_twice()
    create(replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["completed"])

    created_id = replicate_simulator.predictions()[0]["id"]
    _wait_deliveries(replicate_simulator, created_id, 2)
    received = webhook_receiver.received

    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]
    assert received[0].body == received[1].body
    assert [d["duplicate"] for d in replicate_simulator.webhook_deliveries()] == [False, True]
