"""The generation pipeline end to end: HTTP API, PostgreSQL, Redis, a real worker, the simulator."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from PIL import Image

from avatars import prompts
from avatars.models import Avatar
from credits import services as credit_services
from credits.models import LedgerEntry
from replicate_simulator.testing import wait_for
from tests.avatars.selfie_corpus import fixture_bytes

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {"succeeded", "failed", "canceled"}
CREATE_PATH = "/v1/models/openai/gpt-image-1/predictions"


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=5)
    return alice


def upload_session(client) -> str:
    selfie = io.BytesIO(fixture_bytes())
    selfie.name = "me.jpg"
    response = client.post("/api/v1/sessions/", {"selfie": selfie}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def submit(client, style: str = "comic", **headers) -> dict:
    session_id = upload_session(client)
    response = client.post(
        "/api/v1/avatars/", {"session": session_id, "style": style}, format="json", **headers
    )
    assert response.status_code == 202, response.content
    return response.json()


def wait_until_finished(client, avatar_id: str, timeout: float = 30) -> dict:
    def finished():
        body = client.get(f"/api/v1/avatars/{avatar_id}/").json()
        return body if body["status"] in TERMINAL else None

    return wait_for(finished, timeout=timeout, interval=0.05, message=f"avatar {avatar_id}")


def ledger_for(avatar_id: str) -> list[tuple[str, int]]:
    return list(
        LedgerEntry.objects.filter(reference=f"avatar:{avatar_id}")
        .order_by("id")
        .values_list("kind", "amount")
    )


def creates(simulator) -> list[dict]:
    return simulator.requests(method="POST", path=CREATE_PATH)


def test_happy_path_stores_a_1024_png_and_exposes_no_replicate_url(
    pipeline, funded_alice, alice_client
):
    avatar = submit(alice_client)
    assert avatar["status"] == "queued"

    done = wait_until_finished(alice_client, avatar["id"])

    assert done["status"] == "succeeded", done
    assert (done["width"], done["height"], done["attempts"]) == (1024, 1024, 1)
    assert done["error"] is None and done["refund"] is None
    assert pipeline.base_url not in json.dumps(done)
    assert "replicate.delivery" not in json.dumps(done)
    image_response = alice_client.get(done["image_url"])
    assert image_response.status_code == 200
    assert image_response["Cache-Control"].startswith("private")
    image = Image.open(io.BytesIO(b"".join(image_response.streaming_content)))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert ledger_for(avatar["id"]) == [("spend", -1)]
    assert credit_services.get_balance(user=funded_alice) == 4


def test_the_simulator_receives_the_designed_payload(pipeline, funded_alice, alice_client):
    avatar = submit(alice_client, style="manga")
    wait_until_finished(alice_client, avatar["id"])

    [create] = creates(pipeline)
    body = create["body"]
    assert "webhook" not in body, "no PUBLIC_BASE_URL, so no webhook"
    sent = body["input"]
    assert sent["input_images"][0].startswith("data:image/jpeg;base64,")
    assert sent == {
        "prompt": prompts.build_prompt("manga"),
        "input_images": [sent["input_images"][0]],
        "input_fidelity": "high",
        "aspect_ratio": "1:1",
        "quality": "high",
        "background": "opaque",
        "output_format": "png",
        "number_of_images": 1,
        "moderation": "auto",
        "user_id": prompts.opaque_user_id(funded_alice.pk),
        "openai_api_key": "[REDACTED]",  # sent; the simulator does not log it
    }
    assert str(funded_alice.pk) != sent["user_id"] and "alice" not in sent["user_id"]
    assert Avatar.objects.get(pk=avatar["id"]).prompt_version == prompts.PROMPT_VERSION


def test_a_succeeded_avatar_records_its_model_its_tokens_and_what_it_cost(
    pipeline, funded_alice, alice_client
):
    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    avatar = Avatar.objects.get(pk=done["id"])
    [prediction] = avatar.predictions.all()
    assert (avatar.model, avatar.quality) == ("openai/gpt-image-1", "high")
    assert (prediction.model, prediction.quality, prediction.number_of_images) == (
        "openai/gpt-image-1",
        "high",
        1,
    )
    # What the simulator's logs report: a high-fidelity selfie and a high-quality square image
    assert (prediction.input_image_tokens, prediction.output_tokens) == (4160, 4160)
    text = prediction.input_text_tokens
    assert text > 100
    expected = Decimal("0.001") + (Decimal(text) * 5 + 4160 * 10 + 4160 * 40) / 1_000_000
    assert prediction.cost_usd == avatar.cost_usd == expected.quantize(Decimal("0.000001"))


def test_the_model_is_a_setting_and_each_avatar_keeps_its_own(
    pipeline, funded_alice, alice_client, settings
):
    settings.REPLICATE_MODEL = "openai/gpt-image-2"

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "succeeded", done
    [create] = pipeline.requests(method="POST", path="/v1/models/openai/gpt-image-2/predictions")
    sent = create["body"]["input"]
    assert "input_fidelity" not in sent and "openai_api_key" not in sent
    assert (sent["aspect_ratio"], sent["quality"]) == ("1:1", "high")
    avatar = Avatar.objects.get(pk=done["id"])
    assert (avatar.model, avatar.cost_usd) == ("openai/gpt-image-2", Decimal("0.19"))


def test_an_attempt_that_failed_costs_no_image_and_the_avatar_sums_its_attempts(
    pipeline, funded_alice, alice_client, settings
):
    settings.REPLICATE_MODEL = "openai/gpt-image-1.5"
    settings.AVATAR_IMAGE_QUALITY = "medium"
    pipeline.transient_failure()

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    avatar = Avatar.objects.get(pk=done["id"])
    costs = list(avatar.predictions.order_by("number").values_list("status", "cost_usd"))
    assert costs == [("failed", Decimal("0")), ("succeeded", Decimal("0.05"))]
    assert avatar.cost_usd == Decimal("0.05")


def test_content_policy_failure_is_refunded_once_without_a_second_attempt(
    pipeline, funded_alice, alice_client
):
    pipeline.content_policy()

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "failed"
    assert done["error"]["code"] == "content_policy"
    assert "safety" in done["error"]["message"]
    assert done["refund"] == {"status": "refunded", "amount": 1}
    assert done["attempts"] == 1
    assert len(creates(pipeline)) == 1
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]
    assert credit_services.get_balance(user=funded_alice) == 5


def test_transient_failure_then_success_succeeds_on_attempt_two_charged_once(
    pipeline, funded_alice, alice_client
):
    pipeline.transient_failure()

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert len(creates(pipeline)) == 2
    assert ledger_for(done["id"]) == [("spend", -1)]


def test_two_transient_failures_fail_and_refund_once(pipeline, funded_alice, alice_client):
    pipeline.transient_failure(count=1)
    pipeline.e6716(count=1)

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["attempts"]) == ("failed", 2)
    assert done["error"]["code"] == "provider_unavailable"
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@pytest.mark.parametrize("on", ["create", "get"])
def test_error_bursts_within_the_retry_budget_still_succeed(
    pipeline, funded_alice, alice_client, status, on
):
    pipeline.http_errors(status, count=2, on=on)

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "succeeded", done
    assert ledger_for(done["id"]) == [("spend", -1)]
    if on == "create":
        assert len(creates(pipeline)) == 3


@pytest.mark.parametrize("status", [500, 503])
def test_create_failures_beyond_the_retry_budget_fail_and_refund(
    pipeline, funded_alice, alice_client, settings, status
):
    # Given the breaker out of the way (it would take three failures in a row for an incident)
    settings.REPLICATE_BREAKER_THRESHOLD = 10
    pipeline.http_errors(status, count=3, on="create")

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "failed"
    assert done["error"]["code"] == "provider_unavailable"
    assert len(creates(pipeline)) == 3
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


def test_throttled_creates_wait_their_turn_without_spending_the_budget(
    pipeline, funded_alice, alice_client
):
    # Given five 429s in a row, more than the retry budget of two
    pipeline.http_errors(429, count=5, on="create", retry_after=1)

    done = wait_until_finished(alice_client, submit(alice_client)["id"], timeout=30)

    assert done["status"] == "succeeded", done
    assert len(creates(pipeline)) == 6
    assert ledger_for(done["id"]) == [("spend", -1)]


def test_failed_reads_of_a_running_prediction_only_delay_the_next_read(
    pipeline, funded_alice, alice_client, settings
):
    # Given the breaker out of the way, and five failed reads in a row
    settings.REPLICATE_BREAKER_THRESHOLD = 10
    pipeline.http_errors(503, count=5, on="get")

    done = wait_until_finished(alice_client, submit(alice_client)["id"], timeout=30)

    assert done["status"] == "succeeded", done
    assert len(creates(pipeline)) == 1
    assert ledger_for(done["id"]) == [("spend", -1)]


def test_a_bad_replicate_token_fails_at_once_without_retries(
    pipeline, funded_alice, alice_client, settings
):
    settings.REPLICATE_API_TOKEN = "r8_wrong"

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["error"]["code"] == "provider_auth"
    assert len(creates(pipeline)) == 1
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


def test_a_prediction_that_never_finishes_is_canceled_as_timeout(
    pipeline, funded_alice, alice_client, settings
):
    settings.AVATAR_GENERATION_TIMEOUT = 2
    pipeline.hang()

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "failed"
    assert done["error"]["code"] == "timeout"
    prediction_id = Avatar.objects.get(pk=done["id"]).predictions.get().prediction_id
    cancels = pipeline.requests(method="POST", path=f"/v1/predictions/{prediction_id}/cancel")
    assert len(cancels) == 1
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


@pytest.mark.parametrize(
    "arrange, code",
    [
        (lambda sim: sim.empty_output(), "empty_output"),
        (lambda sim: sim.empty_output(output=None), "empty_output"),
        (lambda sim: sim.expired_output(mode="files_gone"), "output_unavailable"),
        (lambda sim: sim.expired_output(mode="data_removed"), "output_unavailable"),
    ],
    ids=["empty-list", "null", "files-gone", "data-removed"],
)
def test_unusable_outputs_fail_with_their_code_and_refund(
    pipeline, funded_alice, alice_client, arrange, code
):
    arrange(pipeline)

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["error"]["code"]) == ("failed", code)
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


def test_an_output_host_off_the_allow_list_is_refused_and_refunded(
    pipeline, funded_alice, alice_client, settings
):
    settings.AVATAR_OUTPUT_ALLOWED_HOSTS = ["replicate.delivery", "*.replicate.delivery"]

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["error"]["code"]) == ("failed", "output_unavailable")
    assert not Avatar.objects.get(pk=done["id"]).image
    downloads = pipeline.requests(method="GET")
    assert not [r for r in downloads if "/delivery/" in r["path"]]
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


def test_an_aborted_prediction_ends_canceled_and_refunded(pipeline, funded_alice, alice_client):
    pipeline.aborted()

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["error"]["code"]) == ("canceled", "canceled")
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]


def test_the_owner_can_cancel_a_running_avatar(pipeline, funded_alice, alice_client):
    pipeline.hang()
    avatar = submit(alice_client)
    wait_for(
        lambda: Avatar.objects.get(pk=avatar["id"]).predictions.exists(),
        timeout=10,
        message="prediction created",
    )

    response = alice_client.post(f"/api/v1/avatars/{avatar['id']}/cancel/")

    assert response.status_code == 202
    assert response.json()["status"] == "canceled"
    assert response.json()["refund"] == {"status": "refunded", "amount": 1}
    prediction_id = Avatar.objects.get(pk=avatar["id"]).predictions.get().prediction_id
    assert pipeline.requests(method="POST", path=f"/v1/predictions/{prediction_id}/cancel")
    again = alice_client.post(f"/api/v1/avatars/{avatar['id']}/cancel/")
    assert again.status_code == 202
    assert ledger_for(avatar["id"]) == [("spend", -1), ("refund", 1)]
