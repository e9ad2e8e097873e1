"""The schema guard: our input against the schema the model publishes, and its alert."""

from __future__ import annotations

import logging

import pytest
from celery.signals import worker_ready
from django.core import mail

from avatars import breaker, replicate_client, schema_guard, tasks
from avatars.models import Alert
from avatars.replicate_client import ReplicateCallError
from config.celery import app as celery_app
from replicate_simulator.testing import SimulatorHandle

MODELS = ["openai/gpt-image-1", "openai/gpt-image-1.5", "openai/gpt-image-2"]
OPENAI_KEY = "sk-live-do-not-leak-0123456789"


@pytest.fixture
def sim(db, settings, replicate_simulator: SimulatorHandle) -> SimulatorHandle:
    """The simulator, with Django's Replicate settings pointing at it and a real-looking key."""
    settings.REPLICATE_BASE_URL = replicate_simulator.base_url
    settings.REPLICATE_API_TOKEN = replicate_simulator.token
    settings.REPLICATE_MODEL = "openai/gpt-image-1"
    settings.OPENAI_API_KEY = OPENAI_KEY
    settings.ADMINS = [("ops", "ops@example.com")]
    return replicate_simulator


def open_alert() -> Alert | None:
    return Alert.objects.filter(rule=schema_guard.ALERT, resolved_at__isnull=True).first()


def narrow_gpt_image_1(sim: SimulatorHandle) -> None:
    """Replicate publishes a new gpt-image-1: one input gone, an enum changed, a new required."""
    sim.change_model_schema(
        "openai/gpt-image-1",
        drop=["input_fidelity"],
        properties={"quality": {"enum": ["standard", "hd"]}, "style": {"type": "string"}},
        require=["style"],
    )


@pytest.mark.parametrize("model", MODELS)
def test_our_input_for_each_model_fits_its_served_schema(settings, sim, model):
    settings.REPLICATE_MODEL = model

    assert schema_guard.check_model_schema() == []
    assert open_alert() is None
    # and the simulator, validating by the schema it serves, takes the same input
    replicate_client.create_prediction(model=model, input=schema_guard.sample_input(model))


def test_gpt_image_2_gets_no_input_fidelity_and_would_refuse_it(sim):
    document = replicate_client.get_model_schema("openai/gpt-image-2")
    ours = schema_guard.sample_input("openai/gpt-image-2")
    assert "input_fidelity" not in ours
    assert "openai_api_key" not in ours, "gpt-image-2 bills through Replicate"
    assert schema_guard.find_input_problems(document, ours) == []

    gpt_image_1_input = schema_guard.sample_input("openai/gpt-image-1")

    assert schema_guard.find_input_problems(document, gpt_image_1_input) == [
        "input.input_fidelity: we send it, the schema has no such input"
    ]


def test_a_changed_schema_opens_the_alert_with_each_difference_once(sim):
    narrow_gpt_image_1(sim)

    problems = schema_guard.check_model_schema()
    schema_guard.check_model_schema()

    assert problems == [
        "input.quality: 'high' is not one of ['standard', 'hd']",
        "input: 'style' is a required property",
        "input.input_fidelity: we send it, the schema has no such input",
    ]
    alert = open_alert()
    assert (alert.severity, alert.count) == (Alert.Severity.CRITICAL, 2)
    assert alert.message.startswith("openai/gpt-image-1: ")
    assert all(f"- {problem}" in alert.message for problem in problems)
    assert [m.subject for m in mail.outbox] == [f"[avatars] critical: {schema_guard.ALERT}"]
    # and it says so before a user meets the 422 the simulator now gives our input
    with pytest.raises(ReplicateCallError) as refused:
        replicate_client.create_prediction(
            model="openai/gpt-image-1", input=schema_guard.sample_input("openai/gpt-image-1")
        )
    assert refused.value.status == 422


def test_the_restored_schema_resolves_the_alert(sim):
    narrow_gpt_image_1(sim)
    schema_guard.check_model_schema()
    alert = open_alert()

    sim.restore_model_schema("openai/gpt-image-1")

    assert schema_guard.check_model_schema() == []
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert open_alert() is None


def fail_with_500(sim: SimulatorHandle) -> None:
    sim.http_errors(500, on="model_get")


def drop_the_connection(sim: SimulatorHandle) -> None:
    sim.drop_connection(on="model_get")


def open_the_breaker(sim: SimulatorHandle) -> None:
    for _ in range(3):
        breaker.record_failure()
    assert breaker.current_state().open


@pytest.mark.parametrize("failure", [fail_with_500, drop_the_connection, open_the_breaker])
def test_a_failed_read_leaves_the_alert_as_it_is(settings, sim, caplog, failure):
    settings.REPLICATE_BREAKER_THRESHOLD = 3
    narrow_gpt_image_1(sim)
    schema_guard.check_model_schema()
    before = open_alert()
    sim.restore_model_schema("openai/gpt-image-1")  # fixed, but we can not read it
    failure(sim)

    with caplog.at_level(logging.WARNING, logger="avatars.schema_guard"):
        assert schema_guard.check_model_schema() == []

    after = open_alert()
    assert (after.pk, after.count, after.message) == (before.pk, before.count, before.message)
    assert "schema of openai/gpt-image-1 not checked" in caplog.text


def test_a_failed_read_opens_no_alert(sim):
    fail_with_500(sim)

    assert schema_guard.check_model_schema() == []
    assert not Alert.objects.filter(rule=schema_guard.ALERT).exists()


def test_a_model_replicate_does_not_know_opens_the_alert(sim):
    sim.http_errors(404, on="model_get")

    assert schema_guard.check_model_schema() == ["the model is not found on Replicate"]
    assert "openai/gpt-image-1" in open_alert().message


def test_the_openai_key_never_reaches_the_alert_nor_the_logs(sim, caplog):
    # a schema whose complaint would quote the value we send as the key
    sim.change_model_schema(
        "openai/gpt-image-1", properties={"openai_api_key": {"type": "integer"}}
    )

    with caplog.at_level(logging.DEBUG):
        problems = schema_guard.check_model_schema()

    assert [p for p in problems if p.startswith("input.openai_api_key:")], problems
    assert OPENAI_KEY not in open_alert().message
    assert all(OPENAI_KEY not in m.body for m in mail.outbox)
    assert OPENAI_KEY not in caplog.text


def test_without_a_key_none_is_sent_and_a_required_key_is_reported(settings, sim):
    settings.OPENAI_API_KEY = ""

    assert schema_guard.check_model_schema() == ["input: 'openai_api_key' is a required property"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({}, "input: the model publishes no Input schema"),
        (
            {"components": {"schemas": {"Input": {"properties": {"prompt": {"$ref": "#/x"}}}}}},
            "input: the published schema refers to /x, which it does not have",
        ),
        (
            {"components": {"schemas": {"Input": {"type": "object", "required": "prompt"}}}},
            "components.schemas.Input: not a valid schema: 'prompt' is not of type 'array'",
        ),
    ],
)
def test_a_schema_that_can_not_be_checked_against_is_a_mismatch(document, problem):
    assert schema_guard.find_input_problems(document, {"prompt": "x"}) == [problem]


def test_the_check_runs_daily_from_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["check-model-schema"]

    assert entry == {"task": "avatars.tasks.check_model_schema_task", "schedule": 24 * 60 * 60}
    assert entry["task"] in celery_app.tasks


def test_the_task_runs_the_check(sim):
    narrow_gpt_image_1(sim)

    assert tasks.check_model_schema_task.apply().get() != []
    assert open_alert() is not None


def test_a_starting_worker_sends_the_check_once(monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.check_model_schema_task, "delay", lambda: sent.append("check"))

    # what `celery worker` sends once its consumer is ready (beat and the web never do)
    worker_ready.send(sender=None)

    assert sent == ["check"]
