"""An outage window: every /v1 call answers 503 and does nothing; accepted work carries on."""

from __future__ import annotations

import httpx
import pytest

from replicate_simulator.control import SimulatorControlError
from replicate_simulator.ids import parse_isoformat
from tests.simulator.helpers import api, create, get, model_input, wait_status

UNAVAILABLE = {
    "title": "Service Unavailable",
    "detail": "Replicate is temporarily unavailable. Please try again later.",
    "status": 503,
}


def _every_api_call(http: httpx.Client, prediction_id: str, file_id: str) -> list[httpx.Response]:
    return [
        http.post("/v1/models/openai/gpt-image-1/predictions", json={"input": model_input()}),
        http.post("/v1/predictions", json={"version": "openai/gpt-image-1", "input": {}}),
        http.get("/v1/predictions"),
        http.get(f"/v1/predictions/{prediction_id}"),
        http.post(f"/v1/predictions/{prediction_id}/cancel"),
        http.post("/v1/files", files={"content": ("a.txt", b"hello", "text/plain")}),
        http.get("/v1/files"),
        http.get(f"/v1/files/{file_id}"),
        http.delete(f"/v1/files/{file_id}"),
        http.get("/v1/webhooks/default/secret"),
    ]


def test_every_api_call_answers_503_and_does_nothing(replicate_simulator):
    replicate_simulator.hang()
    running = create(replicate_simulator).json()
    with api(replicate_simulator) as http:
        uploaded = http.post("/v1/files", files={"content": ("a.txt", b"x", "text/plain")}).json()
    replicate_simulator.clear_requests()

    download_url = replicate_simulator.files()["files"][0]["download_url"]

    state = replicate_simulator.start_outage(30)
    with api(replicate_simulator) as http:
        responses = _every_api_call(http, running["id"], uploaded["id"])
    responses.append(httpx.get(download_url))  # signed, no token, but still under /v1

    assert state["active"] is True
    assert 29 <= state["remaining"] <= 30
    assert [r.status_code for r in responses] == [503] * len(responses)
    assert {r.headers["content-type"] for r in responses} == {"application/problem+json"}
    assert all(r.json() == UNAVAILABLE for r in responses)
    replicate_simulator.end_outage()
    assert len(replicate_simulator.predictions()) == 1  # no create went through
    assert get(replicate_simulator, running["id"])["status"] == "processing"  # cancel not applied
    files = replicate_simulator.files()
    assert (len(files["files"]), files["deletions"]) == (1, [])


def test_unauthenticated_and_unknown_calls_also_answer_503(replicate_simulator):
    replicate_simulator.start_outage(30)

    anonymous = httpx.get(f"{replicate_simulator.base_url}/v1/predictions")
    with api(replicate_simulator) as http:
        unknown = http.get("/v1/no-such-endpoint")

    assert (anonymous.status_code, anonymous.json()) == (503, UNAVAILABLE)
    assert unknown.status_code == 503


def test_outage_requests_are_logged_with_scenario_outage(replicate_simulator):
    replicate_simulator.start_outage(30)

    create(replicate_simulator)
    with api(replicate_simulator) as http:
        http.get("/v1/predictions")

    logged = replicate_simulator.requests()
    assert [(e["endpoint"], e["status"], e["scenario"]) for e in logged] == [
        ("create", 503, "outage"),
        ("list", 503, "outage"),
    ]
    assert logged[0]["prediction_id"] is None


def test_output_files_and_the_control_api_stay_up(replicate_simulator):
    done = wait_status(replicate_simulator, create(replicate_simulator).json()["id"], "succeeded")

    replicate_simulator.start_outage(30)

    assert httpx.get(done["output"][0]).status_code == 200
    assert replicate_simulator.health()["status"] == "ok"
    assert [p["status"] for p in replicate_simulator.predictions()] == ["succeeded"]


def test_running_predictions_finish_and_send_their_webhook_during_an_outage(
    replicate_simulator, webhook_receiver
):
    replicate_simulator.configure(latency=0.5)
    created = create(
        replicate_simulator, webhook=webhook_receiver.url(), webhook_events_filter=["completed"]
    ).json()

    replicate_simulator.start_outage(30)

    delivery = replicate_simulator.wait_for(
        lambda: replicate_simulator.webhook_deliveries(prediction_id=created["id"]),
        message="the completed webhook",
    )[0]
    assert (delivery["event"], delivery["status_code"]) == ("completed", 200)
    assert delivery["payload"]["status"] == "succeeded"
    assert replicate_simulator.prediction(created["id"])["status"] == "succeeded"
    assert replicate_simulator.outage()["active"] is True


def test_the_outage_ends_by_itself(replicate_simulator):
    replicate_simulator.start_outage(0.3)
    assert create(replicate_simulator).status_code == 503

    replicate_simulator.wait_for(
        lambda: create(replicate_simulator).status_code == 201, message="the outage to end"
    )
    assert replicate_simulator.outage() == {"active": False, "until": None, "remaining": 0.0}


def test_a_new_window_replaces_the_old_one(replicate_simulator):
    first = replicate_simulator.start_outage(600)

    second = replicate_simulator.start_outage(5)

    assert parse_isoformat(second["until"]) < parse_isoformat(first["until"])
    assert second["remaining"] <= 5


@pytest.mark.parametrize("end", ["delete", "zero_seconds", "reset"])
def test_an_outage_can_be_ended_early(replicate_simulator, end):
    replicate_simulator.start_outage(600)

    if end == "delete":
        replicate_simulator.end_outage()
    elif end == "zero_seconds":
        replicate_simulator.start_outage(0)
    else:
        replicate_simulator.reset()

    assert replicate_simulator.outage()["active"] is False
    assert create(replicate_simulator).status_code == 201


def test_queued_request_scenarios_wait_for_the_end_of_the_outage(replicate_simulator):
    replicate_simulator.http_errors(500, on="create")
    replicate_simulator.start_outage(30)
    assert create(replicate_simulator).status_code == 503

    replicate_simulator.end_outage()

    assert [create(replicate_simulator).status_code for _ in range(2)] == [500, 201]


@pytest.mark.parametrize("body", [{}, {"seconds": -1}, {"seconds": "soon"}, [5]])
def test_an_outage_needs_a_non_negative_number_of_seconds(replicate_simulator, body):
    response = httpx.post(f"{replicate_simulator.base_url}/_simulator/outage", json=body)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    with pytest.raises(SimulatorControlError):
        replicate_simulator.start_outage(-1)
