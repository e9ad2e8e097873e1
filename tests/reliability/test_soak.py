"""Soak: 300 generations while the worker is killed every few seconds and Redis restarts once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from avatars.models import Avatar, Prediction
from avatars.tasks import submit_avatar_task
from credits import services as credit_services
from credits.models import LedgerEntry
from tests.avatars.test_pipeline import CREATE_PATH
from tests.avatars.test_recovery import make_avatars
from tests.reliability.tally import assert_invariants, record_redeliveries

pytestmark = pytest.mark.django_db(transaction=True)

GENERATIONS = 300
REFUSED = 30  # the simulator's content filter refuses these: failed, and refunded
WAVE = 30  # submissions at a time
KILL_EVERY = 3.0  # at most this long between kill -9s of the worker
RESTART_REDIS_AT_WAVE = 4
SOAK_SETTINGS = {
    "AVATAR_POLL_INITIAL_DELAY": "0.5",
    "AVATAR_POLL_MAX_DELAY": "1",
    "AVATAR_GENERATION_TIMEOUT": "600",
    "AVATAR_SWEEP_INTERVAL": "2",
    "AVATAR_SWEEP_GRACE": "1",
    "CELERY_TASK_TIME_LIMIT": "5",
    "CELERY_VISIBILITY_TIMEOUT": "4",
    "CREDITS_AUTO_REFUND_DAILY_LIMIT": str(REFUSED),
}


def holds_within(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll `condition` for up to `seconds`; whether it came true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_soak_300_generations_with_the_worker_killed_every_few_seconds_and_redis_restarted(
    pipeline, alice, private_redis, start_worker, start_beat, send, settings, report
):
    # Given 300 paid generations, 30 of which the content filter will refuse
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = GENERATIONS
    settings.AVATAR_GENERATION_TIMEOUT = 600
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = REFUSED
    pipeline.configure(latency=1)
    pipeline.content_policy(count=REFUSED)
    credit_services.grant_credits(user=alice, amount=GENERATIONS)
    ids = make_avatars(alice, GENERATIONS)
    workers = [start_worker(**SOAK_SETTINGS)]
    beat = start_beat(**SOAK_SETTINGS)
    started = time.monotonic()
    kills = 0

    def kill_the_worker() -> None:
        nonlocal kills
        kills += workers[-1].kill()
        workers.append(start_worker(**SOAK_SETTINGS))

    # When they arrive in waves, the worker killed as soon as each wave's predictions exist
    for wave in range(0, GENERATIONS, WAVE):
        batch = ids[wave : wave + WAVE]
        for avatar_id in batch:
            send(submit_avatar_task, str(avatar_id), 0)
        if wave == RESTART_REDIS_AT_WAVE * WAVE:
            private_redis.restart()  # under the running worker and beat
        holds_within(
            lambda batch=batch: Prediction.objects.filter(avatar_id__in=batch).count()
            == len(batch),
            KILL_EVERY,
        )
        kill_the_worker()

    # And then every few seconds, until all have ended
    def all_ended() -> bool:
        return not Avatar.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists()

    while not holds_within(all_ended, KILL_EVERY):
        assert time.monotonic() - started < 300, Counter(
            Avatar.objects.values_list("status", flat=True)
        )
        kill_the_worker()
    took = time.monotonic() - started

    # Then every one ended once: succeeded, or refused and refunded exactly once
    outcomes = Counter(Avatar.objects.values_list("status", "error_code"))
    assert outcomes == {
        ("succeeded", ""): GENERATIONS - REFUSED,
        ("failed", "content_policy"): REFUSED,
    }, outcomes
    assert LedgerEntry.objects.filter(kind="refund").count() == REFUSED
    assert credit_services.get_balance(user=alice) == REFUSED
    creates = len(pipeline.requests(method="POST", path=CREATE_PATH))
    assert Prediction.objects.count() == GENERATIONS, "one prediction per generation"
    assert kills >= GENERATIONS // WAVE, "every wave's worker was alive to be killed"
    assert beat.process.poll() is None, "beat lived through the Redis restart"
    assert_invariants()
    redelivered = record_redeliveries(worker.output for worker in workers)
    report(
        f"soak: {GENERATIONS} generations ({GENERATIONS - REFUSED} succeeded, {REFUSED} refused "
        f"and refunded) in {took:.0f} s; {kills} worker kills, 1 Redis restart, "
        f"{redelivered} redeliveries; {creates} creates for {GENERATIONS} predictions used"
    )
