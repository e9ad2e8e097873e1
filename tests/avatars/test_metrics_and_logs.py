"""What monitoring reads: /metrics (Prometheus format), and JSON log lines with avatar ids."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pythonjsonlogger.json import JsonFormatter

from avatars import breaker, generation, metrics, pacing, replicate_client
from avatars.log_context import ContextFilter, log_context
from avatars.models import Avatar, SelfieSession
from avatars.shared_state import shared_redis
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar


@pytest.fixture(autouse=True)
def _fresh_call_counts(settings):
    shared_redis().delete(metrics.REPLICATE_CALLS_KEY)
    yield
    shared_redis().delete(metrics.REPLICATE_CALLS_KEY)


def samples(response) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_need_staff_or_the_token(alice_client, anonymous_client, settings, db):
    settings.METRICS_TOKEN = "scrape-secret"

    assert anonymous_client.get("/metrics").status_code == 401
    assert alice_client.get("/metrics").status_code == 401
    assert anonymous_client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert (
        anonymous_client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code
        == 200
    )


def test_metrics_without_a_configured_token_refuse_an_empty_one(anonymous_client, settings, db):
    settings.METRICS_TOKEN = ""

    assert anonymous_client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_report_generations_calls_completion_and_queue(admin_client, alice, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 10
    credit_services.grant_credits(user=alice, amount=5)
    make_avatar(alice, status="failed", error_code="timeout")
    make_avatar(alice, status="failed", error_code="timeout")
    make_avatar(alice)
    # Labels no real call uses: the shared test worker may count real calls meanwhile.
    metrics.record_replicate_call("test-get", "ok")
    metrics.record_replicate_call("test-get", "ok")
    metrics.record_replicate_call("test-create", "503")

    response = admin_client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = samples(response)
    assert (
        found[("avatar_generations_total", (("error_code", "timeout"), ("status", "failed")))] == 2
    )
    assert found[("avatar_generations_total", (("error_code", ""), ("status", "queued")))] == 1
    assert found[("replicate_calls_total", (("endpoint", "test-get"), ("outcome", "ok")))] == 2
    calls = ("replicate_calls_total", (("endpoint", "test-create"), ("outcome", "503")))
    assert found[calls] == 1
    assert ("celery_queue_depth", ()) in found


def test_the_replicate_seam_counts_its_calls(admin_client, replicate_simulator, settings, db):
    settings.REPLICATE_BASE_URL = replicate_simulator.base_url
    settings.REPLICATE_API_TOKEN = replicate_simulator.token
    replicate_simulator.http_errors(500, count=1, on="get", retry_after=0)

    with pytest.raises(replicate_client.ReplicateCallError):
        replicate_client.get_prediction("nonexistent0000000000000000")
    with pytest.raises(replicate_client.ReplicateCallError):
        replicate_client.get_prediction("nonexistent0000000000000000")

    found = samples(admin_client.get("/metrics"))
    assert found[("replicate_calls_total", (("endpoint", "get"), ("outcome", "500")))] == 1
    assert found[("replicate_calls_total", (("endpoint", "get"), ("outcome", "404")))] == 1


def json_lines(settings) -> tuple[io.StringIO, logging.Handler]:
    """A handler with the project's own JSON formatter and context filter, into a buffer."""
    spec = {k: v for k, v in settings.LOGGING["formatters"]["json"].items() if k != "()"}
    assert settings.LOGGING["formatters"]["json"]["()"] == "pythonjsonlogger.json.JsonFormatter"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**spec))
    handler.addFilter(ContextFilter())
    return stream, handler


def test_pipeline_lines_in_json_carry_avatar_prediction_attempt_and_error_code(alice, settings):
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice, status="running", attempts=1)
    # The selfie is gone, so the step fails the avatar: a line with an error code.
    SelfieSession.objects.filter(pk=avatar.session_id).update(expires_at=avatar.created_at)
    stream, handler = json_lines(settings)
    logger = logging.getLogger("avatars")
    logger.addHandler(handler)
    try:
        with log_context(avatar_id=str(avatar.pk)):
            generation.advance_generation(avatar.pk, 0)
    finally:
        logger.removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [ended] = [line for line in lines if "failed" in line["message"]]
    assert ended["avatar_id"] == str(avatar.pk)
    assert ended["attempt"] == "1"
    assert ended["error_code"] == "internal"
    assert ended["level"] == "ERROR" and ended["logger"] == "avatars.generation"
    assert {"time", "message", "prediction_id"} <= set(ended)
    assert Avatar.objects.get(pk=avatar.pk).status == "failed"


def test_log_format_setting_refuses_unknown_values():
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "LOG_FORMAT" in result.stderr


def test_metrics_show_the_breaker_and_the_create_pace(admin_client, settings):
    settings.REPLICATE_CREATES_PER_MINUTE = 600
    settings.REPLICATE_BREAKER_THRESHOLD = 1
    closed = samples(admin_client.get("/metrics"))
    assert closed[("replicate_breaker_open", ())] == 0
    assert closed[("replicate_create_rate_per_minute", ())] == 600

    breaker.record_failure()
    pacing.record_throttled(1.0)
    pacing.take_turn("waiting", submitted_at=0, now=time.time())
    found = samples(admin_client.get("/metrics"))

    assert found[("replicate_breaker_open", ())] == 1
    assert found[("replicate_create_rate_per_minute", ())] == 300
    assert found[("avatar_create_queue", ())] == 1
