"""The official replicate 1.0.x client cannot tell the simulator from Replicate."""

from __future__ import annotations

import io

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

MODEL = "openai/gpt-image-1"


def _input(**extra: object) -> dict[str, object]:
    return {"prompt": "a comic portrait", "openai_api_key": "sk-test-secret", **extra}


def test_create_through_the_official_model_endpoint_and_wait_for_success(client):
    prediction = client.models.predictions.create(model=MODEL, input=_input(output_format="png"))

    assert prediction.status == "starting"
    assert prediction.model == MODEL
    assert prediction.version == "hidden"
    assert prediction.output is None
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.error is None
    assert len(prediction.output) == 1
    assert prediction.output[0].endswith(f"/delivery/{prediction.id}/output.png")
    assert prediction.metrics["predict_time"] > 0


def test_create_through_the_version_endpoint(client, replicate_simulator):
    version = replicate_simulator.version_id(MODEL)

    prediction = client.predictions.create(version=version, input=_input())

    assert prediction.version == version
    assert prediction.model == MODEL
    prediction.wait()
    assert prediction.status == "succeeded"


def test_version_endpoint_accepts_an_official_model_name(client):
    prediction = client.predictions.create(version=MODEL, input=_input())

    assert prediction.version == "hidden"


def test_get_returns_the_same_prediction(client):
    created = client.models.predictions.create(model=MODEL, input=_input())

    fetched = client.predictions.get(created.id)

    assert fetched.id == created.id
    assert fetched.urls["get"].endswith(f"/v1/predictions/{created.id}")
    assert fetched.urls["cancel"].endswith(f"/v1/predictions/{created.id}/cancel")


def test_cancel_a_running_prediction(client, replicate_simulator):
    replicate_simulator.configure(latency=30)
    prediction = client.models.predictions.create(model=MODEL, input=_input())

    prediction.cancel()

    assert prediction.status == "canceled"
    assert client.predictions.get(prediction.id).status == "canceled"


def test_uploaded_file_url_is_accepted_as_input_image(client, selfie_path):
    uploaded = client.files.create(selfie_path)

    assert uploaded.name == "selfie-astronaut.jpg"
    assert uploaded.content_type == "image/jpeg"
    assert uploaded.size == selfie_path.stat().st_size
    assert client.files.get(uploaded.id).checksums == uploaded.checksums
    prediction = client.models.predictions.create(
        model=MODEL, input=_input(input_images=[uploaded.urls["get"]], output_format="png")
    )
    prediction.wait()
    assert prediction.status == "succeeded"
    image = Image.open(io.BytesIO(httpx.get(prediction.output[0]).content))
    assert image.format == "PNG"
    assert image.size == (1024, 1024)


def test_file_handles_in_input_are_uploaded_by_the_client(client, selfie_path, replicate_simulator):
    with selfie_path.open("rb") as handle:
        prediction = client.models.predictions.create(
            model=MODEL, input=_input(input_images=[handle])
        )

    prediction.wait()
    assert prediction.status == "succeeded"
    assert [r["endpoint"] for r in replicate_simulator.requests()][:2] == ["file_create", "create"]


def test_bad_enum_is_a_422_with_invalid_fields(client, replicate_simulator):
    with pytest.raises(ReplicateError) as raised:
        client.models.predictions.create(model=MODEL, input=_input(aspect_ratio="4:3"))

    assert raised.value.status == 422
    assert raised.value.title == "Input validation failed"
    assert "aspect_ratio must be one of the following" in raised.value.detail
    raw = httpx.post(
        f"{replicate_simulator.base_url}/v1/models/{MODEL}/predictions",
        json={"input": _input(aspect_ratio="4:3")},
        headers={"Authorization": f"Bearer {replicate_simulator.token}"},
    )
    assert raw.status_code == 422
    assert raw.json()["invalid_fields"] == [
        {
            "type": "enum",
            "field": "input.aspect_ratio",
            "description": 'aspect_ratio must be one of the following: "1:1", "3:2", "2:3"',
        }
    ]


def test_bad_token_is_a_401(replicate_simulator):
    client = replicate.Client(api_token="r8_wrong", base_url=replicate_simulator.base_url)

    with pytest.raises(ReplicateError) as raised:
        client.models.predictions.create(model=MODEL, input=_input())

    assert raised.value.status == 401
    assert raised.value.title == "Unauthenticated"
    assert raised.value.detail == "You did not pass a valid authentication token"


def test_missing_authorization_is_a_401(replicate_simulator):
    response = httpx.get(f"{replicate_simulator.base_url}/v1/predictions")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_any_token_is_accepted_when_none_is_configured(replicate_simulator):
    replicate_simulator.configure(token=None)
    client = replicate.Client(api_token="r8_anything", base_url=replicate_simulator.base_url)

    assert client.predictions.list().results == []


def test_webhook_secret_endpoint(client, replicate_simulator):
    secret = client.webhooks.default.secret()

    assert secret.key == replicate_simulator.webhook_secret
    assert secret.key.startswith("whsec_")


def test_list_predictions_newest_first_with_cursor_pagination(client, replicate_simulator):
    replicate_simulator.configure(page_size=2)
    created = [client.models.predictions.create(model=MODEL, input=_input()).id for _ in range(5)]

    first = client.predictions.list()
    second = client.predictions.list(first.next)
    third = client.predictions.list(second.next)

    assert [p.id for p in first] == created[::-1][:2]
    assert [p.id for p in second] == created[::-1][2:4]
    assert [p.id for p in third] == created[::-1][4:]
    assert first.previous is None and third.next is None
    assert [p.id for p in client.predictions.list(third.previous)] == created[::-1][2:4]


def test_delete_file_then_it_is_gone_and_the_deletion_is_recorded(
    client, selfie_path, replicate_simulator
):
    uploaded = client.files.create(selfie_path)

    assert client.files.delete(uploaded.id) is True

    with pytest.raises(ReplicateError) as raised:
        client.files.get(uploaded.id)
    assert raised.value.status == 404
    assert replicate_simulator.files()["deletions"][0]["file_id"] == uploaded.id
    assert replicate_simulator.requests(method="DELETE")[0]["status"] == 204


def test_files_download_url_serves_the_content(client, selfie_path, replicate_simulator):
    uploaded = client.files.create(selfie_path, metadata={"avatar": "abc"})

    listed = replicate_simulator.files()["files"][0]
    download = httpx.get(listed["download_url"])

    assert uploaded.metadata == {"avatar": "abc"}
    assert [f.id for f in client.files.list()] == [uploaded.id]
    assert download.status_code == 200
    assert download.content == selfie_path.read_bytes()
    assert httpx.get(listed["download_url"] + "x").status_code == 404
