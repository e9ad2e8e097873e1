"""Slow output downloads: each /delivery request waits ``output_delay`` in its own thread."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.simulator.helpers import api, create, wait_status


def _timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(url, timeout=30)
    return response.status_code, time.monotonic() - started


def test_a_slow_download_does_not_hold_up_api_calls(replicate_simulator):
    done = wait_status(replicate_simulator, create(replicate_simulator).json()["id"], "succeeded")
    replicate_simulator.set_output_delay(1.5)

    with ThreadPoolExecutor(max_workers=1) as pool:
        download = pool.submit(_timed_get, done["output"][0])
        replicate_simulator.wait_for(
            lambda: replicate_simulator.health()["delayed_downloads"] == 1,
            message="the download to be held",
        )
        started = time.monotonic()
        with api(replicate_simulator) as http:
            read = http.get(f"/v1/predictions/{done['id']}")
        read_seconds = time.monotonic() - started

        assert read.status_code == 200
        assert read_seconds < 0.5
        assert not download.done()
        status, download_seconds = download.result(timeout=10)

    assert status == 200
    assert download_seconds >= 1.5


def test_every_output_request_waits_even_a_missing_file(replicate_simulator):
    replicate_simulator.set_output_delay(0.4)

    status, seconds = _timed_get(f"{replicate_simulator.base_url}/delivery/nope/output.webp")

    assert status == 404
    assert seconds >= 0.4
    assert replicate_simulator.requests()[0]["endpoint"] == "output"


def test_a_reset_ends_a_held_download(replicate_simulator):
    done = wait_status(replicate_simulator, create(replicate_simulator).json()["id"], "succeeded")
    replicate_simulator.set_output_delay(60)

    with ThreadPoolExecutor(max_workers=1) as pool:
        download = pool.submit(_timed_get, done["output"][0])
        replicate_simulator.wait_for(
            lambda: replicate_simulator.health()["delayed_downloads"] == 1,
            message="the download to be held",
        )
        replicate_simulator.reset()
        status, seconds = download.result(timeout=10)

    assert status == 404  # the prediction is gone with the reset
    assert seconds < 10
    assert replicate_simulator.health()["delayed_downloads"] == 0
    assert replicate_simulator.config()["output_delay"] == 0
