"""``Cancel-After`` deadlines: ``aborted`` before start, ``canceled`` while running."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from replicate_simulator.durations import parse_duration
from replicate_simulator.ids import parse_isoformat
from tests.simulator.helpers import MODEL, api, model_input, wait_status


def _create(sim, cancel_after: str, **body):
    body.setdefault("input", model_input())
    with api(sim, headers={"Cancel-After": cancel_after}) as http:
        return http.post(f"/v1/models/{MODEL}/predictions", json=body)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30),
        ("5m", 300),
        ("1m30s", 90),
        ("1h", 3600),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1h2m3.5s", 3723.5),
        ("500us", 0.0005),
        ("12", 12),
        ("0.5", 0.5),
        (" 10s ", 10),
    ],
)
def test_go_durations_and_bare_seconds_are_parsed(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10 s", "-5s", "1d", "s", "5s10", "1e3", "nan"])
def test_other_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_deadline_before_the_start_aborts_the_prediction(replicate_simulator, webhook_receiver):
    replicate_simulator.set_cancel_after_minimum(0)
    replicate_simulator.configure(latency=5, start_delay=3)
    created = _create(
        replicate_simulator,
        "200ms",
        webhook=webhook_receiver.url(),
        webhook_events_filter=["completed"],
    ).json()

    done = wait_status(replicate_simulator, created["id"], "aborted", "canceled", "succeeded")

    assert done["status"] == "aborted"
    assert "started_at" not in done
    assert done["output"] is None and done["error"] is None
    assert done["metrics"] == {"total_time": pytest.approx(0.2, abs=1e-6)}
    delivery = replicate_simulator.wait_for(
        lambda: replicate_simulator.webhook_deliveries(prediction_id=created["id"]),
        message="the completed webhook",
    )[0]
    assert (delivery["event"], delivery["payload"]["status"]) == ("completed", "aborted")


def test_a_deadline_while_processing_cancels_the_prediction(replicate_simulator, webhook_receiver):
    replicate_simulator.set_cancel_after_minimum(0)
    replicate_simulator.hang()
    created = _create(
        replicate_simulator,
        "0.3",
        webhook=webhook_receiver.url(),
        webhook_events_filter=["completed"],
    ).json()
    assert created["status"] == "starting"

    done = wait_status(replicate_simulator, created["id"], "aborted", "canceled", timeout=5)

    assert done["status"] == "canceled"
    assert "started_at" in done
    assert parse_isoformat(done["completed_at"]) - parse_isoformat(
        done["created_at"]
    ) == pytest.approx(0.3, abs=1e-3)
    delivery = replicate_simulator.wait_for(
        lambda: replicate_simulator.webhook_deliveries(prediction_id=created["id"]),
        message="the completed webhook",
    )[0]
    assert delivery["payload"]["status"] == "canceled"
    assert webhook_receiver.received


def test_a_prediction_that_finishes_in_time_is_unaffected(replicate_simulator):
    replicate_simulator.set_cancel_after_minimum(0)
    created = _create(replicate_simulator, "1s").json()  # latency 0.3 s

    done = wait_status(replicate_simulator, created["id"], "succeeded", "canceled", "aborted")
    view = replicate_simulator.prediction(created["id"])
    deadline = parse_isoformat(view["deadline"])
    replicate_simulator.wait_for(
        lambda: datetime.now(UTC).timestamp() > deadline + 0.05, message="the deadline to pass"
    )

    assert done["status"] == "succeeded"
    assert parse_isoformat(done["completed_at"]) < deadline
    after = wait_status(replicate_simulator, created["id"], "succeeded", "canceled", "aborted")
    assert after["status"] == "succeeded" and after["output"]


def test_a_cancel_before_the_deadline_wins(replicate_simulator):
    replicate_simulator.set_cancel_after_minimum(0)
    replicate_simulator.hang()
    created = _create(replicate_simulator, "30s").json()

    with api(replicate_simulator) as http:
        canceled = http.post(f"/v1/predictions/{created['id']}/cancel").json()

    assert canceled["status"] == "canceled"
    assert parse_isoformat(canceled["completed_at"]) < parse_isoformat(created["created_at"]) + 30


def test_prefer_wait_returns_at_the_deadline(replicate_simulator):
    replicate_simulator.set_cancel_after_minimum(0)
    replicate_simulator.hang()

    started = time.monotonic()
    response = _create_waiting(replicate_simulator, cancel_after="300ms", wait=5)

    assert response.json()["status"] == "canceled"
    assert time.monotonic() - started < 3


def _create_waiting(sim, *, cancel_after: str, wait: int):
    headers = {"Cancel-After": cancel_after, "Prefer": f"wait={wait}"}
    with api(sim, headers=headers) as http:
        return http.post(f"/v1/models/{MODEL}/predictions", json={"input": model_input()})


def test_deadlines_below_the_minimum_are_raised_to_it(replicate_simulator):
    assert replicate_simulator.config()["cancel_after_minimum"] == 5.0
    created = _create(replicate_simulator, "1s").json()

    view = replicate_simulator.prediction(created["id"])

    assert view["cancel_after"] == 5.0
    assert parse_isoformat(view["deadline"]) == pytest.approx(
        parse_isoformat(created["created_at"]) + 5.0, abs=1e-3
    )


def test_the_deadline_shows_in_the_internal_view_and_the_header_in_the_log(replicate_simulator):
    created = _create(replicate_simulator, "1m30s").json()
    with api(replicate_simulator) as http:
        plain = http.post(f"/v1/models/{MODEL}/predictions", json={"input": model_input()}).json()

    view = replicate_simulator.prediction(created["id"])
    logged = replicate_simulator.requests(method="POST")

    assert view["cancel_after"] == 90.0
    assert view["deadline"] is not None
    assert logged[0]["headers"]["cancel-after"] == "1m30s"
    assert "cancel-after" not in logged[1]["headers"]
    plain_view = replicate_simulator.prediction(plain["id"])
    assert (plain_view["cancel_after"], plain_view["deadline"]) == (None, None)


@pytest.mark.parametrize("endpoint", ["model", "version"])
def test_an_invalid_cancel_after_is_a_400_and_creates_nothing(replicate_simulator, endpoint):
    with api(replicate_simulator, headers={"Cancel-After": "soon"}) as http:
        if endpoint == "model":
            response = http.post(f"/v1/models/{MODEL}/predictions", json={"input": model_input()})
        else:
            response = http.post("/v1/predictions", json={"version": MODEL, "input": model_input()})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert "Cancel-After" in problem["detail"] and "invalid" in problem["detail"]
    assert replicate_simulator.predictions() == []
