"""Lifecycle logic with a fake clock: status is derived from timestamps, not threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from replicate_simulator import FakeClock, Simulator, SimulatorConfig
from replicate_simulator.prediction import Prediction, Rendered
from replicate_simulator.schema import MODELS
from replicate_simulator.simulator import CreateRequest
from replicate_simulator.testing import wait_for

SPEC = MODELS["openai/gpt-image-1"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    simulator = Simulator(SimulatorConfig(latency=20, start_delay=2, retention=3600), clock=clock)
    simulator.base_url = "http://sim.test"
    yield simulator
    simulator.close()


def _create(sim: Simulator, **input_extra: object) -> str:
    checked = sim.check_create(
        SPEC, "hidden", {"input": {"prompt": "p", "openai_api_key": "k", **input_extra}}
    )
    assert isinstance(checked, CreateRequest)
    return sim.create_prediction(checked).id


def _rendered(sim: Simulator, prediction_id: str) -> bool:
    return sim._predictions[prediction_id].rendered is not None


def test_status_follows_the_clock(sim, clock):
    prediction_id = _create(sim)
    wait_for(lambda: _rendered(sim, prediction_id), message="render")

    assert sim.get_prediction(prediction_id)["status"] == "starting"
    clock.advance(2)
    assert sim.get_prediction(prediction_id)["status"] == "processing"
    clock.advance(17.999)
    assert sim.get_prediction(prediction_id)["status"] == "processing"
    clock.advance(0.001)
    done = sim.get_prediction(prediction_id)
    assert done["status"] == "succeeded"
    assert done["metrics"] == {"total_time": 20.0, "predict_time": 18.0}
    assert done["output"] == [f"http://sim.test/delivery/{prediction_id}/output.webp"]


def test_output_is_removed_after_retention(sim, clock):
    prediction_id = _create(sim)
    wait_for(lambda: _rendered(sim, prediction_id), message="render")
    clock.advance(20 + 3599)
    assert sim.output_file(prediction_id, "output.webp") is not None

    clock.advance(1)

    expired = sim.get_prediction(prediction_id)
    assert (expired["output"], expired["data_removed"]) == (None, True)
    assert sim.output_file(prediction_id, "output.webp") is None


def test_a_slow_render_delays_completion_instead_of_succeeding_without_output():
    prediction = Prediction(
        id="p1",
        seq=1,
        model="openai/gpt-image-1",
        version="hidden",
        input={},
        created_at=100.0,
        start_at=102.0,
        complete_at=120.0,
    )

    assert prediction.status_at(130.0) == "processing"
    prediction.rendered = Rendered(ready_at=125.0, files={"output.png": (b"png", "image/png")})
    assert prediction.status_at(124.9) == "processing"
    assert prediction.status_at(125.0) == "succeeded"
    assert prediction.finished_at() == 125.0


def test_cancel_before_start_never_starts(sim, clock):
    prediction_id = _create(sim)
    clock.advance(1)

    canceled = sim.cancel_prediction(prediction_id)

    assert canceled["status"] == "canceled"
    assert "started_at" not in canceled
    assert canceled["metrics"] == {"total_time": 1.0}
    clock.advance(100)
    assert sim.get_prediction(prediction_id)["status"] == "canceled"


def test_hundreds_of_predictions_need_no_extra_threads(sim, clock):
    sim.scenarios.add({"kind": "hang", "count": 300})
    before = threading.active_count()

    ids = [_create(sim) for _ in range(300)]
    clock.advance(10)

    assert threading.active_count() - before <= 1
    assert {sim.get_prediction(i)["status"] for i in ids} == {"processing"}


def test_final_webhook_is_scheduled_for_completion_and_retried(sim, clock):
    checked = sim.check_create(
        SPEC,
        "hidden",
        {
            "input": {"prompt": "p", "openai_api_key": "k"},
            "webhook": "http://127.0.0.1:9/hook",
            "webhook_events_filter": ["completed"],
        },
    )
    prediction_id = sim.create_prediction(checked).id
    wait_for(lambda: _rendered(sim, prediction_id), message="render")

    assert sim.scheduler.run_due() == 0
    clock.advance(20)
    assert sim.scheduler.run_due() == 1

    attempt = wait_for(lambda: sim.webhook_log.entries(), message="first attempt")[0]
    assert (attempt["event"], attempt["attempt"], attempt["status_code"]) == ("completed", 1, None)
    wait_for(lambda: sim.scheduler.pending() == 1, message="retry scheduled")


def _create_with_deadline(sim: Simulator, cancel_after: float, **body: object) -> str:
    checked = sim.check_create(
        SPEC,
        "hidden",
        {"input": {"prompt": "p", "openai_api_key": "k"}, **body},
        cancel_after=cancel_after,
    )
    assert isinstance(checked, CreateRequest)
    return sim.create_prediction(checked).id


def test_a_deadline_before_the_start_aborts(sim, clock):
    sim.update_config({"cancel_after_minimum": 0})
    prediction_id = _create_with_deadline(sim, 1.5)  # starts at +2

    clock.advance(1.499)
    assert sim.get_prediction(prediction_id)["status"] == "starting"
    clock.advance(0.001)
    aborted = sim.get_prediction(prediction_id)
    assert aborted["status"] == "aborted"
    assert "started_at" not in aborted
    clock.advance(100)
    assert sim.get_prediction(prediction_id)["status"] == "aborted"


def test_a_deadline_while_processing_cancels_and_sends_the_final_webhook(sim, clock):
    sim.update_config({"cancel_after_minimum": 0})
    sim.scenarios.add({"kind": "hang"})
    prediction_id = _create_with_deadline(
        sim, 10, webhook="http://127.0.0.1:9/hook", webhook_events_filter=["completed"]
    )

    clock.advance(9.999)
    assert sim.scheduler.run_due() == 0
    assert sim.get_prediction(prediction_id)["status"] == "processing"
    clock.advance(0.001)
    canceled = sim.get_prediction(prediction_id)
    assert canceled["status"] == "canceled"
    assert canceled["metrics"] == {"total_time": 10.0, "predict_time": 8.0}
    assert sim.scheduler.run_due() == 1
    attempt = wait_for(lambda: sim.webhook_log.entries(), message="final webhook")[0]
    assert attempt["payload"]["status"] == "canceled"


def test_a_render_slower_than_the_run_still_gets_its_webhook_with_a_deadline(sim, clock):
    # Given a prediction with a deadline and a webhook, whose output is still being rendered
    # when the model's run ends
    prediction_id = _create_with_deadline(
        sim, 599, webhook="http://127.0.0.1:9/hook", webhook_events_filter=["completed"]
    )
    wait_for(lambda: _rendered(sim, prediction_id), message="render")
    prediction = sim._predictions[prediction_id]
    rendered, prediction.rendered = prediction.rendered, None

    # When the run ends: the webhook waits for the render, looking again soon
    clock.advance(20)
    assert sim.scheduler.run_due() == 1
    assert sim.webhook_log.entries() == []
    prediction.rendered = rendered
    clock.advance(0.1)
    assert sim.scheduler.run_due() == 1

    # Then it is sent once the image exists, not at the deadline
    attempt = wait_for(lambda: sim.webhook_log.entries(), message="final webhook")[0]
    assert attempt["payload"]["status"] == "succeeded"


def test_a_deadline_after_completion_changes_nothing(sim, clock):
    sim.update_config({"cancel_after_minimum": 0})
    prediction_id = _create_with_deadline(sim, 20.5)  # completes at +20
    wait_for(lambda: _rendered(sim, prediction_id), message="render")

    clock.advance(30)

    assert sim.get_prediction(prediction_id)["status"] == "succeeded"


def test_the_minimum_deadline_applies_at_creation(sim, clock):
    prediction_id = _create_with_deadline(sim, 1)

    clock.advance(4.9)
    assert sim.get_prediction(prediction_id)["status"] == "processing"
    clock.advance(0.1)
    assert sim.get_prediction(prediction_id)["status"] == "canceled"
