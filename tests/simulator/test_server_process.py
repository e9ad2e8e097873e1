"""Running the simulator: the CLI, the test helpers, cross-process control, and scale."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import replicate

from replicate_simulator.control import SimulatorControl
from replicate_simulator.testing import run_simulator, wait_for
from tests.simulator.helpers import api, model_input

ROOT = Path(__file__).resolve().parents[2]


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            return process.stdout.readline()
    raise AssertionError("the simulator printed nothing")


def test_cli_serves_until_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replicate_simulator",
            "--port",
            "0",
            "--latency",
            "0.2",
            "--token",
            "r8_cli",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = _read_line(process, timeout=20)
        base_url = line.rsplit(" ", 1)[1].strip()
        client = replicate.Client(api_token="r8_cli", base_url=base_url)
        client.poll_interval = 0.05
        prediction = client.models.predictions.create(
            model="openai/gpt-image-1", input=model_input()
        )
        prediction.wait()
        assert prediction.status == "succeeded"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()


def test_run_simulator_stops_every_thread_it_started():
    before = {t.ident for t in threading.enumerate()}

    with run_simulator(latency=0.05) as sim:
        with api(sim) as http:
            http.post(
                "/v1/models/openai/gpt-image-1/predictions",
                json={"input": model_input(), "webhook": "http://127.0.0.1:9/x"},
            )
        base_url = sim.base_url

    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []
    try:
        httpx.get(f"{base_url}/_simulator/health", timeout=1)
        raise AssertionError("server still answering")
    except httpx.TransportError:
        pass


def test_control_client_works_from_a_separate_connection(replicate_simulator):
    with SimulatorControl(replicate_simulator.base_url) as control:
        control.hang()
        assert control.health()["status"] == "ok"

    assert [s["kind"] for s in replicate_simulator.scenarios()] == ["hang"]


def test_wait_for_fails_with_a_message_after_its_deadline():
    started = time.monotonic()
    try:
        wait_for(lambda: False, timeout=0.1, message="nothing")
    except AssertionError as exc:
        assert "nothing" in str(exc)
    assert time.monotonic() - started < 1


def test_hundreds_of_in_flight_predictions_are_cheap(replicate_simulator):
    replicate_simulator.configure(latency=20)
    before = threading.active_count()

    with api(replicate_simulator) as http:
        statuses = [
            http.post(
                "/v1/models/openai/gpt-image-1/predictions", json={"input": model_input()}
            ).status_code
            for _ in range(300)
        ]
        listed = http.get("/v1/predictions").json()

    assert set(statuses) == {201}
    assert len(listed["results"]) == 100 and listed["next"]
    assert threading.active_count() - before <= 6  # render pool and one connection thread
    assert {p["status"] for p in replicate_simulator.predictions()} <= {"starting", "processing"}
