"""Unit tests for avatars.replicate_client against the in-process Replicate simulator.

Every call goes over real HTTP through the real `replicate` 1.0.7 client to the simulator;
the simulator's scenarios stage the failures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from PIL import Image
from replicate.exceptions import ReplicateError

from avatars import errors, replicate_client
from avatars.replicate_client import (
    InvalidWebhook,
    PredictionState,
    ReplicateCallError,
    cancel_prediction,
    create_prediction,
    data_uri,
    delete_file,
    get_prediction,
    prediction_state_from_json,
    upload_file,
    verify_webhook,
)
from replicate_simulator.testing import SimulatorHandle
from tests.simulator.webhook_receiver import WebhookReceiver

MODEL = "openai/gpt-image-1"
CREATE_PATH = f"/v1/models/{MODEL}/predictions"


@pytest.fixture
def sim(settings, replicate_simulator: SimulatorHandle) -> SimulatorHandle:
    """The simulator, with Django's Replicate settings pointing at it."""
    settings.REPLICATE_BASE_URL = replicate_simulator.base_url
    settings.REPLICATE_API_TOKEN = replicate_simulator.token
    settings.REPLICATE_WEBHOOK_SECRET = replicate_simulator.webhook_secret
    return replicate_simulator


def selfie_png(size: int = 96) -> bytes:
    image = Image.new("RGB", (size, size), (200, 150, 120))
    for x in range(size // 4, 3 * size // 4):
        for y in range(size // 4, 3 * size // 4):
            image.putpixel((x, y), (60, 40, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gpt_image_input(**overrides: object) -> dict:
    return {
        "prompt": "A comic-book portrait of the person in the photo",
        "openai_api_key": "sk-test-openai-key",
        "input_images": [data_uri(selfie_png(), "image/png")],
        "input_fidelity": "high",
        "aspect_ratio": "1:1",
        "output_format": "png",
        **overrides,
    }


def wait_until_terminal(sim: SimulatorHandle, prediction_id: str) -> PredictionState:
    def finished() -> PredictionState | None:
        state = get_prediction(prediction_id)
        return state if state.is_terminal else None

    return sim.wait_for(finished, timeout=10, message=f"prediction {prediction_id} to finish")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call_error(call, *args, **kwargs) -> ReplicateCallError:
    with pytest.raises(ReplicateCallError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- The round trip ----------------------------------------------------------------------------


def test_a_prediction_is_created_then_read_until_it_succeeds(sim: SimulatorHandle) -> None:
    # When a prediction of the official model is created
    created = create_prediction(model=MODEL, input=gpt_image_input())

    # Then it starts, with an id, and one POST reached the official-model endpoint
    assert created.id
    assert created.status in {"starting", "processing"}
    assert not created.is_terminal
    posts = sim.requests(method="POST", path=CREATE_PATH)
    assert len(posts) == 1
    assert posts[0]["body"]["input"]["aspect_ratio"] == "1:1"
    assert "webhook" not in posts[0]["body"]

    # When it is read until it finishes
    done = wait_until_terminal(sim, created.id)

    # Then it succeeded with an output URL and the facts we keep
    assert done.id == created.id
    assert done.status == "succeeded"
    assert done.error is None
    assert done.output_url is not None
    assert done.output_url.startswith(f"{sim.base_url}/delivery/{created.id}/")
    assert done.output_url.endswith(".png")
    assert done.data_removed is False
    assert done.predict_time is not None and done.predict_time >= 0
    assert done.created_at and done.completed_at


def test_a_webhook_asks_for_the_completed_event_only(sim: SimulatorHandle) -> None:
    # Given a prediction that will not finish (so no webhook is ever sent)
    sim.hang()
    webhook = f"http://127.0.0.1:{closed_port()}/api/v1/webhooks/replicate/?avatar=abc"

    # When it is created with a webhook
    create_prediction(model=MODEL, input=gpt_image_input(), webhook=webhook)

    # Then the webhook is sent as given, filtered to the final event
    body = sim.requests(method="POST", path=CREATE_PATH)[0]["body"]
    assert body["webhook"] == webhook
    assert body["webhook_events_filter"] == ["completed"]


def test_a_running_prediction_is_canceled(sim: SimulatorHandle) -> None:
    # Given a prediction that never finishes on its own
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())

    # When it is canceled
    state = cancel_prediction(created.id)

    # Then the answer says canceled, and so does a later read
    assert state.id == created.id
    assert state.status == "canceled"
    assert state.is_terminal
    assert get_prediction(created.id).status == "canceled"
    assert len(sim.requests(method="POST", path=f"/v1/predictions/{created.id}/cancel")) == 1


def test_a_failed_prediction_carries_its_error_text(sim: SimulatorHandle) -> None:
    sim.content_policy()
    created = create_prediction(model=MODEL, input=gpt_image_input())

    done = wait_until_terminal(sim, created.id)

    assert done.status == "failed"
    assert done.output_url is None
    assert errors.classify_prediction_error(done.error) is errors.CONTENT_POLICY


def test_an_aborted_prediction_is_read_without_an_error(sim: SimulatorHandle) -> None:
    # Given a prediction Replicate aborts (the client's own model can not parse this status)
    sim.aborted()
    created = create_prediction(model=MODEL, input=gpt_image_input())

    # When it is read after it ended
    done = wait_until_terminal(sim, created.id)

    # Then the status is simply "aborted", a terminal one
    assert done.status == "aborted"
    assert done.is_terminal
    assert done.output_url is None


def test_a_create_answered_with_a_status_the_client_model_rejects_is_read_as_it_is(
    sim: SimulatorHandle,
) -> None:
    # Given predictions end at once and the next one is aborted, so the create's own 201 answer
    # already says "aborted" (as a create with `Prefer: wait` can; the client's model fails)
    sim.configure(latency=0)
    sim.aborted()

    # When it is created
    created = create_prediction(model=MODEL, input=gpt_image_input())

    # Then its answer is read as Replicate sent it: one prediction, known and ended
    assert created.status == "aborted"
    assert [p["id"] for p in sim.predictions()] == [created.id]


def test_a_create_sends_cancel_after_with_the_time_left(sim: SimulatorHandle) -> None:
    created = create_prediction(model=MODEL, input=gpt_image_input(), cancel_after=299.7)

    assert sim.requests(method="POST")[-1]["headers"].get("cancel-after") == "299s"
    assert sim.prediction(created.id)["cancel_after"] == 299


def test_cancel_after_is_never_below_replicates_minimum(sim: SimulatorHandle) -> None:
    create_prediction(model=MODEL, input=gpt_image_input(), cancel_after=1.2)

    assert sim.requests(method="POST")[-1]["headers"].get("cancel-after") == "5s"


def test_removed_output_is_reported_as_data_removed(sim: SimulatorHandle) -> None:
    # Given a prediction whose output Replicate has already deleted
    sim.expired_output(mode="data_removed")
    created = create_prediction(model=MODEL, input=gpt_image_input())

    # When it is read after it ended
    done = wait_until_terminal(sim, created.id)

    # Then we learn the output is gone for good
    assert done.status == "succeeded"
    assert done.data_removed is True
    assert done.output_url is None


def test_output_removed_after_retention_is_reported_as_data_removed(
    sim: SimulatorHandle,
) -> None:
    # Given outputs are deleted as soon as the prediction ends
    sim.configure(retention=0)
    created = create_prediction(model=MODEL, input=gpt_image_input())

    done = wait_until_terminal(sim, created.id)

    assert done.data_removed is True
    assert done.output_url is None


# --- Files ------------------------------------------------------------------------------------


def test_an_uploaded_file_can_be_the_models_input_image(sim: SimulatorHandle) -> None:
    # When a selfie is uploaded
    uploaded = upload_file(selfie_png(), filename="avatar-1.png", content_type="image/png")

    # Then we get its id and a URL, sent as a multipart upload with its name and type
    assert uploaded.id
    assert uploaded.url.startswith(sim.base_url)
    upload = sim.requests(method="POST", path="/v1/files")[0]
    content = next(p for p in upload["body"]["multipart"] if p["name"] == "content")
    assert (content["filename"], content["content_type"]) == ("avatar-1.png", "image/png")

    # And a prediction given that URL as its input image succeeds
    created = create_prediction(model=MODEL, input=gpt_image_input(input_images=[uploaded.url]))
    done = wait_until_terminal(sim, created.id)
    assert done.status == "succeeded", done.error


def test_a_deleted_file_is_gone_from_replicate(sim: SimulatorHandle) -> None:
    uploaded = upload_file(selfie_png(), filename="a.png", content_type="image/png")

    delete_file(uploaded.id)

    assert [d["file_id"] for d in sim.files()["deletions"]] == [uploaded.id]
    # And deleting it again is an error we can see
    assert call_error(delete_file, uploaded.id).retryable is False


def test_data_uri_encodes_the_bytes_with_their_type() -> None:
    assert data_uri(b"\x00\xffhi", "image/jpeg") == "data:image/jpeg;base64,AP9oaQ=="


# --- Errors from Replicate's API ----------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "expected"), [(1, 1.0), (7, 7.0), (42, 42.0)])
def test_a_throttled_create_is_retryable_after_the_delay_replicate_names(
    sim: SimulatorHandle, retry_after: int, expected: float
) -> None:
    # Given Replicate throttles the next create ("Expected available in N second(s).")
    sim.http_errors(429, on="create", retry_after=retry_after)

    # When a prediction is created
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    # Then it may be retried, after the delay Replicate gave
    assert error.kind is errors.PROVIDER_RATE_LIMITED
    assert error.retryable is True
    assert error.status == 429
    assert error.retry_after == expected
    assert error.outcome_unknown is False


def test_replicates_own_rate_limit_gives_its_wait_as_retry_after(sim: SimulatorHandle) -> None:
    # Given an account allowed one create a minute
    sim.configure(rate_limit=1)
    create_prediction(model=MODEL, input=gpt_image_input())

    # When a second create is sent at once
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    # Then it is throttled, with the wait Replicate computed
    assert error.kind is errors.PROVIDER_RATE_LIMITED
    assert error.retry_after is not None and 0 < error.retry_after <= 60


def test_a_throttle_without_a_delay_in_its_text_takes_the_retry_after_header(
    sim: SimulatorHandle,
) -> None:
    sim.http_errors(429, on="create", body="<html>Too Many Requests</html>", retry_after=7)
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())
    assert error.retryable is True
    assert error.retry_after == 7


@pytest.mark.parametrize(
    "header, detail, expected",
    [
        ("3", "Expected available in 9 seconds", 3.0),
        (None, "Expected available in 9 seconds", 9.0),
        ("soon", "Expected available in 9 seconds", 9.0),
        (None, "Too many requests", None),
    ],
)
def test_a_throttle_wait_comes_from_retry_after_then_the_body(header, detail, expected) -> None:
    throttle = ReplicateError(status=429, detail=detail)
    assert replicate_client._throttle_delay(throttle, header) == expected


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_on_create_is_retryable_provider_unavailable(
    sim: SimulatorHandle, status: int
) -> None:
    sim.http_errors(status, on="create")

    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.status == status
    assert str(status) in error.detail


def test_a_gateways_html_error_page_is_still_a_retryable_server_error(
    sim: SimulatorHandle,
) -> None:
    # Given a proxy in front of Replicate answers with an HTML page, not a problem document
    sim.http_errors(502, on="create", body="<html><h1>502 Bad Gateway</h1></html>")

    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_on_create_may_have_created_the_prediction(
    sim: SimulatorHandle, status: int
) -> None:
    # Given the gateway in front of Replicate gives up on a create (the origin may have run it)
    sim.http_errors(status, on="create")

    # When a prediction is created
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    # Then the caller is told it may exist, so it looks before creating a duplicate
    assert error.retryable is True
    assert error.outcome_unknown is True


@pytest.mark.parametrize("status", [429, 503, 504])
def test_a_failed_read_is_sent_once_not_retried_inside_the_client(
    sim: SimulatorHandle, status: int
) -> None:
    # Given a prediction, and Replicate answering its next reads with an error the
    # replicate client's own transport would retry (up to 10 times, sleeping in between)
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.http_errors(status, count=5, on="get")

    # When it is read
    started = time.monotonic()
    error = call_error(get_prediction, created.id)

    # Then exactly one request reached Replicate, at once; retrying is the caller's business
    assert error.retryable is True
    assert error.status == status
    assert len(sim.requests(method="GET", path=f"/v1/predictions/{created.id}")) == 1
    assert time.monotonic() - started < 1.0


def test_a_wrong_token_is_provider_auth_and_not_retried(settings, sim: SimulatorHandle) -> None:
    # Given a token Replicate does not accept
    settings.REPLICATE_API_TOKEN = "r8_not-the-right-token"

    # When any call is made
    create_error = call_error(create_prediction, model=MODEL, input=gpt_image_input())
    read_error = call_error(get_prediction, "abc123")

    # Then it is our configuration: not retried
    for error in (create_error, read_error):
        assert error.kind is errors.PROVIDER_AUTH
        assert error.retryable is False
        assert error.status == 401
    assert sim.predictions() == []


def test_invalid_input_is_invalid_request_and_not_retried(sim: SimulatorHandle) -> None:
    # When the input does not match the model's schema
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input(aspect_ratio="7:3"))

    # Then Replicate's 422 is an invalid request, with its explanation kept for the logs
    assert error.kind is errors.INVALID_REQUEST
    assert error.retryable is False
    assert error.status == 422
    assert "aspect_ratio" in error.detail
    assert error.outcome_unknown is False
    assert sim.predictions() == []


def test_a_missing_required_input_is_invalid_request(sim: SimulatorHandle) -> None:
    error = call_error(create_prediction, model=MODEL, input={"prompt": "no key"})
    assert error.kind is errors.INVALID_REQUEST
    assert "openai_api_key" in error.detail


def test_an_unknown_prediction_is_an_internal_error(sim: SimulatorHandle) -> None:
    error = call_error(get_prediction, "doesnotexist0000000000000")
    assert error.kind is errors.INTERNAL
    assert error.retryable is False
    assert error.status == 404


def test_an_unknown_model_is_not_retried(sim: SimulatorHandle) -> None:
    error = call_error(create_prediction, model="openai/no-such-model", input=gpt_image_input())
    assert error.retryable is False
    assert error.status == 404


def test_an_answer_that_is_not_a_prediction_is_read_again_later(sim: SimulatorHandle) -> None:
    # Given a read answered 200 with JSON that is not a prediction (here: the secret endpoint)
    # When it is read as a prediction
    error = call_error(
        replicate_client._request_prediction,
        "GET",
        "/v1/webhooks/default/secret",
    )

    # Then it is Replicate misbehaving, not a failed generation: the next read may do better
    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.outcome_unknown is False


# --- Errors on the way to Replicate --------------------------------------------------------------


def test_a_connection_dropped_after_the_create_was_processed_leaves_the_outcome_unknown(
    sim: SimulatorHandle,
) -> None:
    # Given Replicate creates the prediction but the connection drops before its answer
    sim.drop_connection(on="create", after_create=True)

    # When a prediction is created
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    # Then it may be retried, but the caller is told the prediction may exist (it does)
    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.outcome_unknown is True
    assert len(sim.predictions()) == 1


def test_a_dropped_read_is_retryable_and_changed_nothing(sim: SimulatorHandle) -> None:
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.drop_connection(on="get")

    error = call_error(get_prediction, created.id)

    assert error.retryable is True
    assert error.outcome_unknown is False


def test_a_dropped_cancel_leaves_the_outcome_unknown(sim: SimulatorHandle) -> None:
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.drop_connection(on="cancel", after_create=True)

    error = call_error(cancel_prediction, created.id)

    assert error.retryable is True
    assert error.outcome_unknown is True
    assert get_prediction(created.id).status == "canceled"


def test_a_refused_connection_is_retryable_and_surely_created_nothing(settings) -> None:
    # Given nothing listens where Replicate should be
    settings.REPLICATE_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    settings.REPLICATE_API_TOKEN = "r8_any"

    # When a prediction is created
    error = call_error(create_prediction, model=MODEL, input=gpt_image_input())

    # Then it may be retried, and the connection never opened so nothing was created
    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.outcome_unknown is False
    assert error.status is None


# --- Timeouts -------------------------------------------------------------------------------------


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Timeout]:
    """A small TIMEOUT, and clients built with it (the clients are cached per token and URL)."""
    timeout = httpx.Timeout(0.3, connect=0.3)
    monkeypatch.setattr(replicate_client, "TIMEOUT", timeout)
    replicate_client._client_for.cache_clear()
    yield timeout
    replicate_client._client_for.cache_clear()


def test_the_transport_gives_a_request_without_timeouts_our_timeouts(
    sim: SimulatorHandle, short_timeout: httpx.Timeout
) -> None:
    # Given a read Replicate answers only after 2 s, and a client that sets no timeout at all
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.delay(2.0, on="get")
    client = httpx.Client(
        base_url=sim.base_url,
        timeout=None,
        transport=replicate_client._BoundedTransport(),
        headers={"Authorization": f"Bearer {sim.token}"},
    )

    # When it is sent
    started = time.monotonic()
    with client, pytest.raises(httpx.ReadTimeout):
        client.get(f"/v1/predictions/{created.id}")

    # Then our read timeout stopped it
    assert time.monotonic() - started < 1.5


def test_the_transport_keeps_a_timeout_the_request_sets(
    sim: SimulatorHandle, short_timeout: httpx.Timeout
) -> None:
    # Given a request that sets its own, longer, read timeout
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.delay(0.6, on="get")
    client = httpx.Client(
        base_url=sim.base_url,
        transport=replicate_client._BoundedTransport(),
        headers={"Authorization": f"Bearer {sim.token}"},
    )

    # Then it is not shortened to ours
    with client:
        response = client.get(f"/v1/predictions/{created.id}", timeout=5.0)
    assert response.status_code == 200


def test_a_slow_upload_times_out_as_a_retryable_error(
    sim: SimulatorHandle, short_timeout: httpx.Timeout
) -> None:
    # Given uploads are answered after 2 s (and the client sends them with timeout=None)
    sim.delay(2.0, on="file_create")

    # When a file is uploaded
    started = time.monotonic()
    error = call_error(upload_file, selfie_png(), filename="a.png", content_type="image/png")

    # Then our timeout ended it, as a retryable error that may have stored the file
    assert time.monotonic() - started < 1.5
    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.outcome_unknown is True
    assert "Timeout" in error.detail


def test_a_slow_read_times_out_as_a_retryable_error(
    sim: SimulatorHandle, short_timeout: httpx.Timeout
) -> None:
    sim.hang()
    created = create_prediction(model=MODEL, input=gpt_image_input())
    sim.delay(2.0, on="get")

    started = time.monotonic()
    error = call_error(get_prediction, created.id)

    assert time.monotonic() - started < 1.5
    assert error.kind is errors.PROVIDER_UNAVAILABLE
    assert error.retryable is True
    assert error.outcome_unknown is False


# --- Webhooks ---------------------------------------------------------------------------------


def sign(
    secret: str, body: bytes, *, webhook_id: str = "msg_2abc", timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed with a `whsec_...` secret."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{stamp}.{body.decode()}".encode()
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{signature}",
    }


WEBHOOK_BODY = json.dumps({"id": "ufawqhfynnddngldkgtslldrkq", "status": "succeeded"}).encode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


def test_a_correctly_signed_webhook_is_accepted(sim: SimulatorHandle) -> None:
    verify_webhook(headers=sign(sim.webhook_secret, WEBHOOK_BODY), body=WEBHOOK_BODY)


def test_header_names_are_matched_whatever_their_case(sim: SimulatorHandle) -> None:
    headers = {k.title(): v for k, v in sign(sim.webhook_secret, WEBHOOK_BODY).items()}
    verify_webhook(headers=headers, body=WEBHOOK_BODY)


def test_a_webhook_with_several_signatures_is_accepted_when_one_matches(
    sim: SimulatorHandle,
) -> None:
    # Given a signature header listing an old secret's signature before the current one
    headers = sign(sim.webhook_secret, WEBHOOK_BODY)
    old = sign(OTHER_SECRET, WEBHOOK_BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{old} {headers['webhook-signature']}"

    verify_webhook(headers=headers, body=WEBHOOK_BODY)


def test_a_webhook_signed_with_another_secret_is_refused(sim: SimulatorHandle) -> None:
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=sign(OTHER_SECRET, WEBHOOK_BODY), body=WEBHOOK_BODY)


def test_a_webhook_whose_body_was_changed_is_refused(sim: SimulatorHandle) -> None:
    headers = sign(sim.webhook_secret, WEBHOOK_BODY)
    tampered = WEBHOOK_BODY.replace(b"succeeded", b"failed")
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=tampered)


def test_a_webhook_whose_id_was_changed_is_refused(sim: SimulatorHandle) -> None:
    headers = sign(sim.webhook_secret, WEBHOOK_BODY)
    headers["webhook-id"] = "msg_replayed"
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=WEBHOOK_BODY)


@pytest.mark.parametrize("age", [600, -600], ids=["10-minutes-old", "10-minutes-ahead"])
def test_a_correctly_signed_webhook_outside_five_minutes_is_refused(
    sim: SimulatorHandle, age: int
) -> None:
    # Given a webhook signed correctly, but with a timestamp 10 minutes off
    headers = sign(sim.webhook_secret, WEBHOOK_BODY, timestamp=int(time.time()) - age)

    # Then it is refused (a replay)
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=WEBHOOK_BODY)


def test_a_webhook_four_minutes_old_is_accepted(sim: SimulatorHandle) -> None:
    headers = sign(sim.webhook_secret, WEBHOOK_BODY, timestamp=int(time.time()) - 240)
    verify_webhook(headers=headers, body=WEBHOOK_BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_webhook_missing_a_header_is_refused(sim: SimulatorHandle, missing: str) -> None:
    headers = sign(sim.webhook_secret, WEBHOOK_BODY)
    del headers[missing]
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=WEBHOOK_BODY)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("webhook-id", ""),
        ("webhook-timestamp", "yesterday"),
        ("webhook-signature", "garbage"),
        ("webhook-signature", "v1,not-base64!!"),
    ],
    ids=["empty-id", "non-numeric-timestamp", "no-version", "bad-base64"],
)
def test_a_webhook_with_a_malformed_header_is_refused(
    sim: SimulatorHandle, header: str, value: str
) -> None:
    headers = sign(sim.webhook_secret, WEBHOOK_BODY)
    headers[header] = value
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=WEBHOOK_BODY)


def test_a_webhook_without_headers_or_body_is_refused(sim: SimulatorHandle) -> None:
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers={}, body=WEBHOOK_BODY)
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=sign(sim.webhook_secret, b""), body=b"")


def test_a_body_that_is_not_utf8_is_refused(sim: SimulatorHandle) -> None:
    headers = sign(sim.webhook_secret, b"{}")
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=headers, body=b"\xff\xfe{}")


def test_a_webhook_the_simulator_really_sent_verifies(sim: SimulatorHandle) -> None:
    # Given a prediction whose completion is delivered to a real receiver
    receiver = WebhookReceiver()
    try:
        create_prediction(
            model=MODEL, input=gpt_image_input(), webhook=receiver.url("/hook?avatar=1")
        )
        delivered = sim.wait_for(lambda: receiver.received, timeout=10, message="the webhook")[0]
    finally:
        receiver.stop()

    # Then its headers and body verify, and the body is a prediction we can read
    verify_webhook(headers=delivered.headers, body=delivered.body)
    state = prediction_state_from_json(json.loads(delivered.body))
    assert state.status == "succeeded"


@pytest.fixture
def secret_from_replicate(settings, sim: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """No REPLICATE_WEBHOOK_SECRET: the secret must come from Replicate's API."""
    settings.REPLICATE_WEBHOOK_SECRET = ""
    replicate_client._fetched_webhook_secret.cache_clear()
    yield sim
    replicate_client._fetched_webhook_secret.cache_clear()


def test_without_a_configured_secret_the_accounts_secret_is_fetched_once(
    secret_from_replicate: SimulatorHandle,
) -> None:
    sim = secret_from_replicate

    # When two webhooks signed with the account's secret are verified
    verify_webhook(headers=sign(sim.webhook_secret, WEBHOOK_BODY), body=WEBHOOK_BODY)
    verify_webhook(headers=sign(sim.webhook_secret, WEBHOOK_BODY), body=WEBHOOK_BODY)

    # Then both pass, and the secret was fetched from Replicate once
    assert len(sim.requests(method="GET", path="/v1/webhooks/default/secret")) == 1
    assert replicate_client.webhook_secret() == sim.webhook_secret
    # And a webhook signed otherwise is still refused
    with pytest.raises(InvalidWebhook):
        verify_webhook(headers=sign(OTHER_SECRET, WEBHOOK_BODY), body=WEBHOOK_BODY)


def test_when_the_secret_can_not_be_fetched_the_failure_is_not_an_invalid_webhook(
    secret_from_replicate: SimulatorHandle,
) -> None:
    # Given Replicate fails to give the secret
    sim = secret_from_replicate
    sim.http_errors(503, on="webhook_secret")

    # When a webhook is verified
    with pytest.raises(ReplicateCallError) as caught:
        verify_webhook(headers=sign(sim.webhook_secret, WEBHOOK_BODY), body=WEBHOOK_BODY)

    # Then the failure says try again (the webhook may be good), and is not remembered
    assert caught.value.retryable is True
    verify_webhook(headers=sign(sim.webhook_secret, WEBHOOK_BODY), body=WEBHOOK_BODY)


# --- Reading prediction JSON ----------------------------------------------------------------------


def test_prediction_json_is_read_with_the_fields_the_client_model_drops() -> None:
    state = prediction_state_from_json(
        {
            "id": "p1",
            "status": "aborted",
            "output": None,
            "error": None,
            "data_removed": True,
            "metrics": {"predict_time": 3},
            "webhook": "https://example.com/hook",
        }
    )
    assert (state.id, state.status, state.data_removed) == ("p1", "aborted", True)
    assert state.is_terminal
    assert state.predict_time == 3.0
    assert state.logs == ""


@pytest.mark.parametrize(
    ("output", "url"),
    [
        (["https://replicate.delivery/a.png", "https://replicate.delivery/b.png"], "A"),
        ("https://replicate.delivery/a.png", "A"),
        ([], None),
        (None, None),
        ([""], None),
        ([{"url": "https://replicate.delivery/a.png"}], None),
    ],
    ids=["list", "string", "empty-list", "null", "empty-string", "not-a-string"],
)
def test_the_output_url_is_the_first_url_of_the_output(output: object, url: str | None) -> None:
    state = PredictionState(id="p", status="succeeded", output=output)
    expected = "https://replicate.delivery/a.png" if url == "A" else None
    assert state.output_url == expected


@pytest.mark.parametrize(
    "payload",
    [None, [], "p1", {}, {"id": "p1"}, {"status": "succeeded"}, {"id": "", "status": "failed"}],
    ids=["null", "list", "string", "empty", "no-status", "no-id", "empty-id"],
)
def test_json_that_is_not_a_prediction_is_refused(payload: object) -> None:
    with pytest.raises(ValueError):
        prediction_state_from_json(payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("next_page", "followed"),
    [
        ("https://api.replicate.com/v1/predictions?cursor=2", True),
        ("/v1/predictions?cursor=2", True),
        ("https://elsewhere.example/v1/predictions?cursor=2", False),
        ("http://api.replicate.com/v1/predictions?cursor=2", False),
        ("https://api.replicate.com:8443/v1/predictions?cursor=2", False),
        ("//elsewhere.example/v1/predictions", False),
    ],
)
def test_the_predictions_list_follows_next_pages_only_on_the_api_host(
    monkeypatch, settings, next_page, followed
):
    settings.REPLICATE_BASE_URL = "https://api.replicate.com"
    asked = []

    def answer(method, path, **kwargs):
        asked.append(path)
        next_one = next_page if len(asked) == 1 else None
        return httpx.Response(200, json={"results": [], "next": next_one})

    monkeypatch.setattr(replicate_client, "_send", answer)

    replicate_client.list_recent_predictions(created_after=datetime.now(UTC), pages=3)

    assert asked[1:] == ([next_page] if followed else [])
