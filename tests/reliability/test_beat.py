"""Two celery-beat processes at once (a deploy overlap, a second host): nothing runs twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from avatars.models import Avatar, AvatarTransition, Prediction
from credits import services as credit_services
from credits.models import LedgerEntry
from replicate_simulator.testing import wait_for
from tests.avatars.test_pipeline import CREATE_PATH
from tests.avatars.test_recovery import make_avatars
from tests.reliability.tally import assert_invariants, count_redrives

pytestmark = pytest.mark.django_db(transaction=True)

AVATARS = 40
SENT_SWEEP = "Sending due task sweep-avatars"


def test_two_beat_processes_at_once_sweep_each_avatar_once(
    pipeline, alice, start_worker, start_beat, settings, report
):
    # Given 40 avatars whose first message was lost (as if the broker died at commit)
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = AVATARS
    settings.AVATAR_GENERATION_TIMEOUT = 120
    pipeline.configure(latency=1)
    credit_services.grant_credits(user=alice, amount=AVATARS)
    ids = make_avatars(alice, AVATARS)
    Avatar.objects.update(next_poll_at=timezone.now() + timedelta(hours=1))
    # The avatars are 5 minutes overdue; a grace of 30 s keeps a later step that merely runs a
    # little late (a loaded machine) from counting as a second re-drive.
    fast_sweeps = {
        "AVATAR_SWEEP_INTERVAL": "1",
        "AVATAR_SWEEP_GRACE": "30",
        "CELERY_TASK_TIME_LIMIT": "20",
        "AVATAR_GENERATION_TIMEOUT": "120",
        # All created at once: no step waits a countdown for its turn that a sweep could overtake.
        "REPLICATE_CREATES_BURST": str(AVATARS),
    }
    worker = start_worker(**fast_sweeps)
    beats = [start_beat(**fast_sweeps), start_beat(**fast_sweeps)]
    wait_for(lambda: all(beat.saw(SENT_SWEEP) for beat in beats), timeout=30, message="sweeps")

    # When all of them fall due while both beats send the sweeper every second
    Avatar.objects.update(next_poll_at=timezone.now() - timedelta(minutes=5))
    wait_for(
        lambda: not Avatar.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists(),
        timeout=90,
        interval=0.5,
        message="every avatar finished",
    )
    wait_for(lambda: all(beat.count(SENT_SWEEP) >= 2 for beat in beats), timeout=30)

    # Then both really swept, yet each avatar was re-driven once and generated once
    assert all(beat.process.poll() is None for beat in beats), "both beats still running"
    sweeps = [beat.count(SENT_SWEEP) for beat in beats]
    redriven = count_redrives(worker.output)
    assert redriven == AVATARS, redriven
    assert set(Avatar.objects.values_list("status", flat=True)) == {"succeeded"}
    assert len(pipeline.requests(method="POST", path=CREATE_PATH)) == AVATARS
    assert Prediction.objects.count() == AVATARS
    assert AvatarTransition.objects.filter(to_status="succeeded").count() == AVATARS
    assert LedgerEntry.objects.filter(kind="spend").count() == AVATARS
    assert_invariants()
    report(
        f"two beats: {sweeps[0]} + {sweeps[1]} sweeps sent at once; {redriven} re-drives for "
        f"{AVATARS} lost avatars, each generated once"
    )
