"""kill -9 the worker: countdown polls it held come back (Redis redelivers them), none twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import kombu.pools
import pytest
import redis
from django.utils import timezone

from avatars import strays
from avatars.models import Avatar, AvatarTransition, Prediction
from avatars.tasks import submit_avatar_task, sweep_avatars_task
from config.celery import app as celery_app
from credits import services as credit_services
from replicate_simulator.testing import wait_for
from tests.avatars.test_pipeline import CREATE_PATH, upload_session
from tests.avatars.test_recovery import make_avatar, make_avatars
from tests.reliability.tally import assert_invariants, count_redrives, record_redeliveries

pytestmark = pytest.mark.django_db(transaction=True)

AVATARS = 100
VISIBILITY = 8


def test_a_worker_killed_holding_100_countdown_polls_finishes_them_all_after_a_restart(
    pipeline, alice, start_worker, send, settings, report
):
    # Given 100 running avatars whose polls wait as countdown messages in one worker
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = AVATARS
    pipeline.configure(latency=8)
    credit_services.grant_credits(user=alice, amount=AVATARS)
    ids = make_avatars(alice, AVATARS)
    # A short visibility timeout, so Redis hands the killed worker's messages out again soon.
    slow_polls = {
        "REPLICATE_CREATES_BURST": str(AVATARS),  # all created before the first finishes
        "AVATAR_POLL_INITIAL_DELAY": "2",
        "AVATAR_POLL_MAX_DELAY": "3",
        "AVATAR_GENERATION_TIMEOUT": "120",
    }
    settings.AVATAR_GENERATION_TIMEOUT = 120
    redelivery = {
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY),
        # A step killed half-way is the sweeper's: due again after the time limit plus grace.
        "CELERY_TASK_TIME_LIMIT": "10",
        "AVATAR_SWEEP_GRACE": "2",
    }
    worker = start_worker(**slow_polls, **redelivery)
    for avatar_id in ids:
        send(submit_avatar_task, str(avatar_id), 0)
    wait_for(
        lambda: Prediction.objects.count() == AVATARS,
        timeout=60,
        message="every prediction created",
    )

    # When the worker is killed with them in hand, and another one starts
    worker.kill()
    killed_at = time.monotonic()
    held = Avatar.objects.filter(status="running").count()
    assert held > AVATARS * 0.9, "nearly all were still waiting on their polls"
    # A starting worker hands back messages unacknowledged for longer than the visibility
    # timeout (kombu then looks again only every ~100 s): start it once they are that old.
    wait_for(lambda: time.monotonic() - killed_at > VISIBILITY + 1, timeout=30)
    second = start_worker(**slow_polls, **redelivery)

    # Then every avatar finishes, each with the one prediction it had
    restarted_at = time.monotonic()
    sweep_until_finished(send, ids, every=5)
    took = time.monotonic() - restarted_at
    outcomes = set(Avatar.objects.values_list("status", "error_code"))
    assert outcomes == {("succeeded", "")}, outcomes
    assert len(pipeline.requests(method="POST", path=CREATE_PATH)) == AVATARS
    assert Prediction.objects.count() == AVATARS
    assert AvatarTransition.objects.filter(to_status="succeeded").count() == AVATARS
    assert_invariants()
    redelivered = record_redeliveries([worker.output, second.output])
    redriven = count_redrives(second.output)
    assert redelivered > 0
    report(
        f"worker kill: {held} avatars held in countdown polls; after the restart "
        f"{redelivered} of the killed worker's messages were redelivered and the sweeper "
        f"re-drove {redriven}; all {AVATARS} finished once ({took:.0f} s)"
    )


def sweep_until_finished(send, ids, *, every: float = 3, timeout: float = 120) -> None:
    """Wait for every avatar to end while the sweeper runs every few seconds, as beat would."""
    last_sweep = [time.monotonic()]

    def finished() -> bool:
        if not Avatar.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists():
            return True
        if time.monotonic() - last_sweep[0] > every:
            send(sweep_avatars_task)
            last_sweep[0] = time.monotonic()
        return False

    wait_for(finished, timeout=timeout, interval=0.5, message="every avatar finished")


SWEEP_SOON = {
    "AVATAR_SWEEP_GRACE": "1",
    "CELERY_TASK_TIME_LIMIT": "5",
    "AVATAR_GENERATION_TIMEOUT": "120",
}


def test_redis_flushed_in_the_middle_of_50_running_avatars_the_sweeper_finishes_them(
    pipeline, alice, start_worker, send, worker_redis_url, settings, report
):
    # Given 50 running avatars whose next polls wait in Redis
    settings.AVATAR_GENERATION_TIMEOUT = 120
    pipeline.configure(latency=3)
    credit_services.grant_credits(user=alice, amount=50)
    ids = make_avatars(alice, 50)
    worker = start_worker(**SWEEP_SOON)
    for avatar_id in ids:
        send(submit_avatar_task, str(avatar_id), 0)
    wait_for(lambda: Prediction.objects.count() == 50, timeout=60, message="all created")

    # When Redis loses everything (and the worker what it held)
    worker.kill()
    redis.Redis.from_url(worker_redis_url).flushdb()
    start_worker(**SWEEP_SOON)

    # Then the sweeper, reading PostgreSQL, drives every one of them to its end
    sweep_until_finished(send, ids)
    assert set(Avatar.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(pipeline.requests(method="POST", path=CREATE_PATH)) == 50
    assert_invariants()
    report("redis flush: 50 running avatars lost their messages; the sweeper finished all 50")


@contextmanager
def publish_from_the_web_to(url: str, monkeypatch) -> Iterator[None]:
    """Have this (the web) process's Celery app publish to `url` for a while."""

    def forget_connections() -> None:
        for pool in (celery_app._pool, celery_app.amqp._producer_pool):
            if pool is not None:
                pool.force_close_all()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        # kombu keeps the closed producer pool in its registry: later publishes would find it.
        kombu.pools.reset()

    # Celery reads this variable before its settings; workers started later do not inherit it.
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", url)
    forget_connections()
    try:
        yield
    finally:
        monkeypatch.delenv("CELERY_BROKER_WRITE_URL")
        forget_connections()


def test_redis_down_when_the_api_commits_the_sweeper_submits_later(
    pipeline,
    alice,
    alice_client,
    private_redis,
    start_worker,
    send,
    settings,
    report,
    caplog,
    monkeypatch,
):
    # Given Redis is down while a user submits
    settings.AVATAR_GENERATION_TIMEOUT = 120
    credit_services.grant_credits(user=alice, amount=1)
    session_id = upload_session(alice_client)
    private_redis.kill()
    with publish_from_the_web_to(private_redis.url, monkeypatch):
        response = alice_client.post("/api/v1/avatars/", {"session": session_id}, format="json")

    # Then the answer does not lie: accepted and queued, charged once, nothing lost
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    avatar_id = response.json()["id"]
    assert credit_services.get_balance(user=alice) == 0
    assert "could not enqueue submit_avatar_task" in caplog.text, "the publish really failed"

    # And once Redis is back, the sweeper submits it
    private_redis.start()
    start_worker(**SWEEP_SOON)
    sweep_until_finished(send, [avatar_id])
    assert Avatar.objects.get(pk=avatar_id).status == "succeeded"
    assert len(pipeline.requests(method="POST", path=CREATE_PATH)) == 1
    assert_invariants()
    report("redis down at commit: 202 queued and charged once; the sweeper submitted it later")


LOST_CREATES = {**SWEEP_SOON, "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY)}


def kill_the_worker_before_creates_are_answered(pipeline, start_worker, send, ids) -> None:
    """Replicate makes each avatar's prediction but answers late; the worker dies meanwhile."""
    pipeline.delay(15, count=len(ids), on="create", after_create=True)
    worker = start_worker(**LOST_CREATES)
    for avatar_id in ids:
        send(submit_avatar_task, str(avatar_id), 0)
    wait_for(lambda: len(pipeline.predictions()) == len(ids), timeout=30, message="the creates")
    worker.kill()


def test_a_worker_killed_after_replicate_accepted_a_create_leaves_one_prediction_one_charge(
    pipeline, alice, start_worker, send, settings, report
):
    # Given Replicate makes the prediction but is slow to answer the create
    settings.AVATAR_GENERATION_TIMEOUT = 120
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice)

    # When the worker dies before it could store the prediction's id
    kill_the_worker_before_creates_are_answered(pipeline, start_worker, send, [avatar.pk])
    avatar.refresh_from_db()
    assert (avatar.status, avatar.create_sent_at is not None) == ("queued", True)
    assert not avatar.predictions.exists()
    start_worker(**LOST_CREATES)

    # Then the sweeper's step finds the stray prediction instead of paying for another
    sweep_until_finished(send, [avatar.pk])
    avatar.refresh_from_db()
    assert avatar.status == "succeeded", avatar.error_detail
    assert avatar.completed_at <= avatar.deadline_at, "ended within its deadline"
    [made] = pipeline.predictions()  # one create reached Replicate, and it was the one used
    assert avatar.predictions.get().prediction_id == made["id"]
    assert credit_services.get_balance(user=alice) == 0, "charged once"
    assert_invariants()
    report("kill after create: the stray prediction was found and used; one create, one charge")


def test_two_lost_creates_nobody_can_tell_apart_are_canceled_as_strays(
    pipeline, alice, start_worker, send, settings, report
):
    # Given two avatars of one selfie and style whose creates Replicate makes but answers late
    settings.AVATAR_GENERATION_TIMEOUT = 120
    credit_services.grant_credits(user=alice, amount=2)
    ids = make_avatars(alice, 2)
    pipeline.hang(count=2)  # the two lost ones would run on, billed, until canceled

    # When the worker dies before storing either, each avatar's lookup finds two candidates
    kill_the_worker_before_creates_are_answered(pipeline, start_worker, send, ids)
    start_worker(**LOST_CREATES)
    sweep_until_finished(send, ids)

    # Then neither is adopted (either could be the other's), both avatars succeed anew, and
    # the stray-canceller, a few minutes on, stops the two lost ones
    assert set(Avatar.objects.values_list("status", flat=True)) == {"succeeded"}
    canceled = strays.cancel_stray_predictions(now=timezone.now() + timedelta(minutes=2))
    statuses = Counter(p["status"] for p in pipeline.predictions())
    assert (canceled, statuses) == (2, {"canceled": 2, "succeeded": 2}), statuses
    assert credit_services.get_balance(user=alice) == 0, "charged once each"
    assert_invariants()
    report(
        "ambiguous lost creates: 2 lost, neither adopted, 2 created anew and used; "
        f"{canceled} strays canceled"
    )


def test_a_countdown_longer_than_the_visibility_timeout_is_redelivered_and_finishes_once(
    pipeline, alice, start_worker, send, settings, report
):
    # Given polls that wait longer than Redis waits before handing a message out again
    settings.AVATAR_GENERATION_TIMEOUT = 120
    pipeline.configure(latency=6)
    credit_services.grant_credits(user=alice, amount=5)
    ids = make_avatars(alice, 5)
    long_polls = {
        "AVATAR_POLL_FIRST_DELAY": "8",
        "AVATAR_POLL_INITIAL_DELAY": "8",
        "AVATAR_POLL_MAX_DELAY": "8",
        "CELERY_VISIBILITY_TIMEOUT": "2",
        "AVATAR_GENERATION_TIMEOUT": "120",
    }
    first_worker = start_worker(**long_polls)
    for avatar_id in ids:
        send(submit_avatar_task, str(avatar_id), 0)
    wait_for(lambda: Prediction.objects.count() == 5, timeout=30, message="all created")

    # When a second worker starts once the held polls are older than the visibility timeout
    wait_for(lambda: first_worker.saw("succeeded"), timeout=30, message="a step done")
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > 3, timeout=10)
    second_worker = start_worker(**long_polls)

    # Then it is handed copies of the first worker's polls, and still each avatar ends once
    wait_for(
        lambda: not Avatar.objects.filter(pk__in=ids, status="running").exists(),
        timeout=60,
        interval=0.5,
        message="every avatar finished",
    )
    redelivered = record_redeliveries([first_worker.output, second_worker.output])
    assert redelivered >= 1, "a held countdown poll was delivered a second time"
    assert set(Avatar.objects.values_list("status", flat=True)) == {"succeeded"}
    assert Prediction.objects.count() == 5
    assert AvatarTransition.objects.filter(to_status="succeeded").count() == 5
    assert_invariants()
    report(f"visibility timeout: {redelivered} polls redelivered; 5 avatars finished once each")
