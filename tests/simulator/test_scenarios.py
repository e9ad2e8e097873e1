"""Every queued scenario, seen through the official client or raw HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic.v1 import ValidationError
from replicate.exceptions import ReplicateError

from replicate_simulator.control import SimulatorControlError
from replicate_simulator.ids import parse_isoformat
from tests.simulator.helpers import MODEL, api, create, get, model_input, wait_status


def test_content_policy_failure(client, replicate_simulator):
    replicate_simulator.content_policy()

    prediction = client.models.predictions.create(model=MODEL, input=model_input())
    prediction.wait()

    assert prediction.status == "failed"
    assert "rejected by the safety system" in prediction.error
    assert "moderation_blocked" in prediction.error
    assert prediction.output is None


def test_transient_failure_e1000(client, replicate_simulator):
    replicate_simulator.transient_failure()

    prediction = client.models.predictions.create(model=MODEL, input=model_input())
    prediction.wait()

    assert prediction.status == "failed"
    assert prediction.error.endswith("(E1000)")


def test_e6716(client, replicate_simulator):
    replicate_simulator.e6716()

    prediction = client.models.predictions.create(model=MODEL, input=model_input())
    prediction.wait()

    assert prediction.error == "Director: unexpected error handling prediction (E6716)"


def test_custom_failure_text_and_count(client, replicate_simulator):
    replicate_simulator.fail("Out of credits", count=2)

    errors = []
    for _ in range(3):
        prediction = client.models.predictions.create(model=MODEL, input=model_input())
        prediction.wait()
        errors.append(prediction.error)

    assert errors == ["Out of credits", "Out of credits", None]


def test_scenarios_can_target_one_model(client, replicate_simulator):
    replicate_simulator.e6716(model="openai/gpt-image-1-mini")

    plain = client.models.predictions.create(model=MODEL, input=model_input())
    mini = client.models.predictions.create(model="openai/gpt-image-1-mini", input=model_input())
    plain.wait()
    mini.wait()

    assert (plain.status, mini.status) == ("succeeded", "failed")


def test_429_burst_on_create(client, replicate_simulator):
    replicate_simulator.http_errors(429, count=2, on="create", retry_after=3)

    for _ in range(2):
        with pytest.raises(ReplicateError) as raised:
            client.models.predictions.create(model=MODEL, input=model_input())
        assert raised.value.status == 429
        assert raised.value.detail == "Request was throttled. Expected available in 3 seconds."
    prediction = client.models.predictions.create(model=MODEL, input=model_input())

    assert prediction.status == "starting"
    statuses = [r["status"] for r in replicate_simulator.requests()]
    assert statuses == [429, 429, 201]


def test_429_burst_on_get_is_absorbed_by_the_clients_retry_transport(client, replicate_simulator):
    prediction = client.models.predictions.create(model=MODEL, input=model_input())
    replicate_simulator.http_errors(429, count=3, on="get", retry_after=0)

    fetched = client.predictions.get(prediction.id)

    assert fetched.id == prediction.id
    assert [r["status"] for r in replicate_simulator.requests(method="GET")] == [429, 429, 429, 200]


def test_429_has_retry_after_header_and_replicate_body(replicate_simulator):
    replicate_simulator.http_errors(429, on="create", retry_after=1)

    response = create(replicate_simulator)

    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "title": "Request was throttled",
        "detail": "Request was throttled. Expected available in 1 second.",
        "status": 429,
    }


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_bursts_on_create(client, replicate_simulator, status):
    replicate_simulator.http_errors(status, count=2)

    for _ in range(2):
        with pytest.raises(ReplicateError) as raised:
            client.models.predictions.create(model=MODEL, input=model_input())
        assert raised.value.status == status
    assert client.models.predictions.create(model=MODEL, input=model_input()).status == "starting"


def test_5xx_burst_on_get(replicate_simulator):
    created = create(replicate_simulator).json()
    replicate_simulator.http_errors(502, count=2, on="get", body="<html>bad gateway</html>")

    with api(replicate_simulator) as http:
        statuses = [http.get(f"/v1/predictions/{created['id']}").status_code for _ in range(3)]

    assert statuses == [502, 502, 200]


def test_dropped_connection_before_create(client, replicate_simulator):
    replicate_simulator.drop_connection(on="create")

    with pytest.raises(httpx.RemoteProtocolError):
        client.models.predictions.create(model=MODEL, input=model_input())

    assert replicate_simulator.predictions() == []
    logged = replicate_simulator.requests()[0]
    assert (logged["dropped"], logged["status"], logged["scenario"]) == (
        True,
        None,
        "drop_connection",
    )


def test_dropped_connection_after_create_leaves_a_prediction_the_client_never_saw(
    client, replicate_simulator
):
    replicate_simulator.drop_connection(on="create", after_create=True)

    with pytest.raises(httpx.RemoteProtocolError):
        client.models.predictions.create(model=MODEL, input=model_input())

    [prediction] = replicate_simulator.predictions()
    assert replicate_simulator.requests()[0]["prediction_id"] == prediction["id"]
    assert wait_status(replicate_simulator, prediction["id"], "succeeded")


def test_dropped_connection_on_get(client, replicate_simulator):
    prediction = client.models.predictions.create(model=MODEL, input=model_input())
    replicate_simulator.drop_connection(on="get", prediction_id=prediction.id)

    with pytest.raises(httpx.RemoteProtocolError):
        client.predictions.get(prediction.id)
    assert client.predictions.get(prediction.id).id == prediction.id


def test_prediction_that_never_finishes_until_canceled(client, replicate_simulator):
    replicate_simulator.configure(latency=0.1)
    replicate_simulator.hang()
    prediction = client.models.predictions.create(model=MODEL, input=model_input())

    planned = parse_isoformat(replicate_simulator.predictions()[0]["planned_completion_at"])

    replicate_simulator.wait_for(
        lambda: time.time() > planned + 0.3, message="well past the planned completion"
    )

    assert client.predictions.get(prediction.id).status == "processing"
    assert client.predictions.cancel(prediction.id).status == "canceled"


def test_succeeded_with_empty_output(client, replicate_simulator):
    replicate_simulator.empty_output()
    replicate_simulator.empty_output(output=None)

    first = client.models.predictions.create(model=MODEL, input=model_input())
    second = client.models.predictions.create(model=MODEL, input=model_input())
    first.wait()
    second.wait()

    assert (first.status, first.output) == ("succeeded", [])
    assert (second.status, second.output) == ("succeeded", None)


def test_output_already_expired_files_gone(replicate_simulator):
    replicate_simulator.expired_output()
    created = create(replicate_simulator).json()

    done = wait_status(replicate_simulator, created["id"], "succeeded")

    assert done["output"] and done["data_removed"] is False
    assert httpx.get(done["output"][0]).status_code == 404


def test_output_already_expired_data_removed(replicate_simulator):
    replicate_simulator.expired_output(mode="data_removed")
    created = create(replicate_simulator).json()

    done = wait_status(replicate_simulator, created["id"], "succeeded")

    assert done["output"] is None
    assert done["data_removed"] is True


def test_aborted_prediction(client, replicate_simulator):
    replicate_simulator.aborted()
    created = create(replicate_simulator).json()

    done = wait_status(replicate_simulator, created["id"], "aborted")

    assert "started_at" not in done
    assert done["completed_at"] and done["output"] is None
    # The official 1.0.7 client's model has no "aborted" status and refuses to parse it.
    with pytest.raises(ValidationError):
        client.predictions.get(created["id"])


def test_delay_scenario_slows_a_request(replicate_simulator):
    created = create(replicate_simulator).json()
    replicate_simulator.delay(0.5, on="get")

    with api(replicate_simulator, timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.get(f"/v1/predictions/{created['id']}")
    assert get(replicate_simulator, created["id"])["id"] == created["id"]


def test_delay_after_create_makes_the_prediction_then_answers_late(replicate_simulator):
    replicate_simulator.delay(1.0, on="create", after_create=True)

    with api(replicate_simulator, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post(f"/v1/models/{MODEL}/predictions", json={"input": model_input()})

    [made] = replicate_simulator.predictions()
    assert get(replicate_simulator, made["id"])["id"] == made["id"]


def test_reset_forgets_everything_and_restores_config(replicate_simulator):
    original = replicate_simulator.config()
    replicate_simulator.configure(latency=42)
    replicate_simulator.hang(count=5)
    create(replicate_simulator)

    replicate_simulator.reset()

    assert replicate_simulator.config() == original
    assert replicate_simulator.scenarios() == []
    assert replicate_simulator.predictions() == []
    assert replicate_simulator.requests() == []


def test_runtime_config_changes_apply_to_new_predictions(replicate_simulator):
    config = replicate_simulator.configure(
        latency=12.5, retention=7, rate_limit=9, webhook_retry_schedule=[0.1, 0.2]
    )

    assert (config["latency"], config["retention"], config["rate_limit"]) == (12.5, 7, 9)
    assert config["webhook_retry_schedule"] == [0.1, 0.2]
    [prediction] = [create(replicate_simulator).json()]
    view = replicate_simulator.predictions()[0]
    assert view["id"] == prediction["id"]
    assert view["planned_completion_at"] > view["created_at"]


def test_bad_control_calls_are_rejected(replicate_simulator):
    with pytest.raises(SimulatorControlError) as bad_kind:
        replicate_simulator.queue("explode")
    with pytest.raises(SimulatorControlError) as bad_setting:
        replicate_simulator.configure(latency=-1)
    with pytest.raises(SimulatorControlError):
        replicate_simulator.configure(nonsense=1)

    assert bad_kind.value.status == 400
    assert "latency" in bad_setting.value.body


def test_request_log_redacts_secrets_and_summarises_uploads(
    client, replicate_simulator, selfie_path
):
    uploaded = client.files.create(selfie_path)
    client.models.predictions.create(
        model=MODEL,
        input=model_input(input_images=[uploaded.urls["get"]]),
        webhook="https://example.com/hook?avatar=1",
    )

    upload, created = replicate_simulator.requests()

    assert upload["method"] == "POST" and upload["path"] == "/v1/files"
    assert upload["headers"]["authorization"] == "Bearer [REDACTED]"
    assert upload["body"] == {
        "multipart": [
            {
                "name": "content",
                "filename": "selfie-astronaut.jpg",
                "content_type": "image/jpeg",
                "size": selfie_path.stat().st_size,
            }
        ]
    }
    assert created["path"] == "/v1/models/openai/gpt-image-1/predictions"
    assert created["body"]["input"]["openai_api_key"] == "[REDACTED]"
    assert created["body"]["webhook"] == "https://example.com/hook?avatar=1"
    assert created["status"] == 201
    assert replicate_simulator.token not in str(replicate_simulator.requests())
    assert "sk-test-secret" not in str(replicate_simulator.requests())
