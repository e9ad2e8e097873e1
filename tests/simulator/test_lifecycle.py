"""starting -> processing -> succeeded over the configured latency; output and expiry."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from PIL import Image

from replicate_simulator.ids import parse_isoformat
from tests.simulator.helpers import api, create, get, model_input, wait_status


def test_status_moves_from_starting_to_processing_to_succeeded(replicate_simulator):
    replicate_simulator.configure(latency=0.6, start_delay=0.2)
    created = create(replicate_simulator).json()

    assert created["status"] == "starting"
    assert "started_at" not in created and "completed_at" not in created
    processing = wait_status(replicate_simulator, created["id"], "processing")
    assert processing["logs"] == "Generating image...\n"
    assert processing["output"] is None
    done = wait_status(replicate_simulator, created["id"], "succeeded")

    created_at = parse_isoformat(done["created_at"])
    started_at = parse_isoformat(done["started_at"])
    completed_at = parse_isoformat(done["completed_at"])
    assert completed_at - created_at >= 0.6 - 1e-3
    assert abs((started_at - created_at) - 0.2) < 0.01
    assert abs(done["metrics"]["predict_time"] - (completed_at - started_at)) < 0.01
    assert done["logs"].startswith("Generating image...\nImage size: 1024x1024\n")
    assert done["data_removed"] is False
    assert done["source"] == "api"
    assert set(done["urls"]) == {"get", "cancel", "web"}


def test_input_is_echoed_without_the_openai_key(replicate_simulator):
    created = create(replicate_simulator, input=model_input(quality="high")).json()

    assert created["input"]["quality"] == "high"
    assert created["input"]["openai_api_key"] == "[REDACTED]"


def test_output_is_a_1024_png_comic_made_from_the_selfie_and_deterministic(
    replicate_simulator, selfie_bytes
):
    data_uri = "data:image/jpeg;base64," + base64.b64encode(selfie_bytes).decode()
    body = {"input": model_input(input_images=[data_uri], output_format="png")}
    first = create(replicate_simulator, **body).json()
    second = create(replicate_simulator, **body).json()

    outputs = []
    for prediction in (first, second):
        done = wait_status(replicate_simulator, prediction["id"], "succeeded")
        response = httpx.get(done["output"][0])
        assert response.headers["content-type"] == "image/png"
        outputs.append(response.content)

    image = Image.open(io.BytesIO(outputs[0]))
    assert image.format == "PNG"
    assert image.size == (1024, 1024)
    assert outputs[0] == outputs[1]
    # Made from the selfie: the astronaut's orange suit dominates the lower middle.
    red, green, blue = image.convert("RGB").getpixel((300, 700))
    assert red > 150 and red > green + 40 and red > blue + 40


def test_different_inputs_give_different_outputs(replicate_simulator, selfie_bytes):
    data_uri = "data:image/jpeg;base64," + base64.b64encode(selfie_bytes).decode()
    with_selfie = create(
        replicate_simulator, input=model_input(input_images=[data_uri], output_format="png")
    ).json()
    text_only = create(replicate_simulator, input=model_input(output_format="png")).json()

    hashes = {
        hashlib.sha256(
            httpx.get(wait_status(replicate_simulator, p["id"], "succeeded")["output"][0]).content
        ).hexdigest()
        for p in (with_selfie, text_only)
    }

    assert len(hashes) == 2


def test_output_format_and_aspect_ratio_are_honoured(replicate_simulator):
    created = create(
        replicate_simulator,
        input=model_input(output_format="jpeg", aspect_ratio="3:2", number_of_images=2),
    ).json()

    done = wait_status(replicate_simulator, created["id"], "succeeded")

    assert [url.rsplit("/", 1)[1] for url in done["output"]] == ["output_0.jpg", "output_1.jpg"]
    image = Image.open(io.BytesIO(httpx.get(done["output"][1]).content))
    assert (image.format, image.size) == ("JPEG", (1536, 1024))


def test_input_image_is_fetched_from_an_http_url(replicate_simulator, selfie_bytes):
    class Serve(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(selfie_bytes)))
            self.end_headers()
            self.wfile.write(selfie_bytes)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/selfie.jpg?sig=1"
        data_uri = "data:image/jpeg;base64," + base64.b64encode(selfie_bytes).decode()
        by_url = create(replicate_simulator, input=model_input(input_images=[url])).json()
        by_data = create(replicate_simulator, input=model_input(input_images=[data_uri])).json()
        done_url = wait_status(replicate_simulator, by_url["id"], "succeeded")
        done_data = wait_status(replicate_simulator, by_data["id"], "succeeded")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    assert httpx.get(done_url["output"][0]).content == httpx.get(done_data["output"][0]).content


def test_unreachable_input_image_fails_the_prediction(replicate_simulator):
    created = create(
        replicate_simulator, input=model_input(input_images=["http://127.0.0.1:9/missing.jpg"])
    ).json()

    done = wait_status(replicate_simulator, created["id"], "failed")

    assert "Failed to download input file" in done["error"]
    assert done["output"] is None


def test_undecodable_input_image_fails_the_prediction(replicate_simulator):
    data_uri = "data:image/jpeg;base64," + base64.b64encode(b"not an image").decode()
    created = create(replicate_simulator, input=model_input(input_images=[data_uri])).json()

    done = wait_status(replicate_simulator, created["id"], "failed")

    assert "cannot identify image file" in done["error"]


def test_output_expires_after_the_retention_period(replicate_simulator):
    replicate_simulator.configure(retention=0.5)
    created = create(replicate_simulator).json()
    done = wait_status(replicate_simulator, created["id"], "succeeded")
    assert httpx.get(done["output"][0]).status_code == 200

    expired = replicate_simulator.wait_for(
        lambda: (p := get(replicate_simulator, created["id"]))["data_removed"] and p,
        message="output to expire",
    )

    assert expired["output"] is None
    assert expired["status"] == "succeeded"
    assert httpx.get(done["output"][0]).status_code == 404


def test_prefer_wait_holds_the_request_until_the_prediction_finishes(replicate_simulator):
    replicate_simulator.configure(latency=0.5)
    with api(replicate_simulator, headers={"Prefer": "wait=5"}) as http:
        started = time.monotonic()
        response = http.post(
            "/v1/models/openai/gpt-image-1/predictions", json={"input": model_input()}
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert len(response.json()["output"]) == 1
    assert 0.45 <= elapsed < 3


def test_prefer_wait_returns_the_running_prediction_when_time_is_up(replicate_simulator):
    replicate_simulator.configure(latency=30)
    with api(replicate_simulator, headers={"Prefer": "wait=1"}) as http:
        started = time.monotonic()
        response = http.post(
            "/v1/models/openai/gpt-image-1/predictions", json={"input": model_input()}
        )
        elapsed = time.monotonic() - started

    assert response.json()["status"] == "processing"
    assert 0.95 <= elapsed < 3


def test_prefer_wait_through_the_official_client(client, replicate_simulator):
    replicate_simulator.configure(latency=0.3)

    prediction = client.models.predictions.create(
        model="openai/gpt-image-1", input=model_input(), wait=5
    )

    assert prediction.status == "succeeded"
    assert replicate_simulator.requests()[0]["headers"]["prefer"] == "wait=5"


def test_delivery_base_url_is_configurable(replicate_simulator):
    port = replicate_simulator.base_url.rsplit(":", 1)[1]
    replicate_simulator.configure(delivery_base_url=f"http://localhost:{port}/")
    created = create(replicate_simulator).json()

    done = wait_status(replicate_simulator, created["id"], "succeeded")

    assert done["output"][0].startswith(f"http://localhost:{port}/delivery/")
    assert done["urls"]["get"].startswith(replicate_simulator.base_url)
    assert httpx.get(done["output"][0]).status_code == 200


def test_cancel_of_a_finished_prediction_changes_nothing(replicate_simulator):
    created = create(replicate_simulator).json()
    wait_status(replicate_simulator, created["id"], "succeeded")

    with api(replicate_simulator) as http:
        response = http.post(f"/v1/predictions/{created['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"


def test_unknown_prediction_is_a_404(replicate_simulator):
    with api(replicate_simulator) as http:
        response = http.get("/v1/predictions/doesnotexist")

    assert response.status_code == 404
    assert response.json()["status"] == 404
