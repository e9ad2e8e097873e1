"""Lost answers and lost messages: fencing, the lost-create lookup and the sweeper."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from freezegun import freeze_time
from PIL import Image

from avatars import breaker, generation, prompts, replicate_client
from avatars.models import Avatar, SelfieSession
from avatars.selfies import prepare_selfie_from_settings
from avatars.services import create_selfie_session
from credits import services as credit_services
from replicate_simulator.testing import wait_for
from tests.avatars.selfie_corpus import encode, fixture_image
from tests.avatars.test_pipeline import creates, ledger_for, submit, wait_until_finished
from tests.concurrency import run_concurrently


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=10)
    return alice


def make_avatar(owner, session: SelfieSession | None = None, **fields) -> Avatar:
    """An avatar row with its charge, as the API makes it, but with no message sent."""
    session = session or create_selfie_session(
        owner=owner, selfie=prepare_selfie_from_settings(encode(fixture_image(), "JPEG"))
    )
    avatar = Avatar.objects.create(
        owner=owner,
        session=session,
        style="comic",
        prompt_version=prompts.PROMPT_VERSION,
        next_poll_at=timezone.now(),
        **fields,
    )
    credit_services.spend_credits(user=owner, amount=1, reference=avatar.credit_reference)
    return avatar


def make_avatars(owner, count: int) -> list:
    """Ids of `count` charged avatars of one selfie session, with no message sent."""
    first = make_avatar(owner)
    return [first.pk] + [make_avatar(owner, session=first.session).pk for _ in range(count - 1)]


# --- fencing -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stale_or_duplicate_step_message_does_nothing(funded_alice, settings):
    avatar = make_avatar(funded_alice, status="running", attempts=1, poll_seq=5)

    generation.advance_generation(avatar.pk, 4)
    generation.advance_generation(avatar.pk, 6)

    avatar.refresh_from_db()
    assert (avatar.poll_seq, avatar.status) == (5, "running")


@pytest.mark.django_db
def test_a_step_message_for_a_finished_avatar_does_nothing(funded_alice):
    avatar = make_avatar(funded_alice, status="succeeded", poll_seq=3)

    generation.advance_generation(avatar.pk, 3)

    avatar.refresh_from_db()
    assert (avatar.poll_seq, avatar.status) == (3, "succeeded")


@pytest.mark.django_db
def test_polls_start_at_the_default_first_delay_then_grow_exponentially_to_the_cap(settings):
    # Given no run times yet: the first read comes at AVATAR_POLL_FIRST_DELAY
    settings.AVATAR_POLL_FIRST_DELAY = 12
    settings.AVATAR_POLL_INITIAL_DELAY = 2
    settings.AVATAR_POLL_MAX_DELAY = 30

    elapsed = (0, 5, 12, 14, 16, 20, 28, 90)
    delays = [generation.poll_delay(elapsed=e, webhooks=False) for e in elapsed]

    for delay, base in zip(delays, (12, 7, 2, 2, 4, 8, 16, 30), strict=True):
        assert base <= delay <= base * (1 + settings.AVATAR_POLL_JITTER)
    assert generation.poll_delay(elapsed=12, webhooks=True) >= 6


def _finished_prediction(avatar, number: int, predict_time: float) -> None:
    avatar.predictions.create(
        number=number,
        prediction_id=f"p-{avatar.pk}-{number}",
        status="succeeded",
        predict_time=predict_time,
        completed_at=timezone.now(),
    )


@pytest.mark.django_db
def test_the_first_poll_comes_at_the_tenth_percentile_of_recent_run_times(funded_alice, settings):
    # Given ten finished runs of 20..38 s (p10: 21.8 s) and a default that would poll at 2 s
    settings.AVATAR_POLL_FIRST_DELAY = 2
    for index in range(10):
        _finished_prediction(make_avatar(funded_alice, status="succeeded"), 1, 20 + 2 * index)

    first = generation.poll_delay(elapsed=0, webhooks=False)

    assert 21.8 <= first <= 21.8 * (1 + settings.AVATAR_POLL_JITTER)
    # and a run that finishes near p10 is seen within about five reads
    reads, elapsed = 0, 0.0
    while elapsed < 38:
        elapsed += generation.poll_delay(elapsed=elapsed, webhooks=False)
        reads += 1
    assert reads <= 5


@pytest.mark.django_db
def test_run_times_are_cached_per_process_for_a_minute(funded_alice, settings):
    _finished_prediction(make_avatar(funded_alice, status="succeeded"), 1, 25)
    start = timezone.now()
    with freeze_time(start):
        assert generation.first_poll_delay() == 25
    _finished_prediction(make_avatar(funded_alice, status="succeeded"), 1, 5)

    with freeze_time(start + timedelta(seconds=generation.RUN_TIME_CACHE_SECONDS - 1)):
        assert generation.first_poll_delay() == 25
    with freeze_time(start + timedelta(seconds=generation.RUN_TIME_CACHE_SECONDS + 1)):
        assert generation.first_poll_delay() == pytest.approx(7)  # p10 of 5 and 25


@pytest.mark.django_db
def test_without_run_times_the_default_is_looked_at_again_within_seconds(funded_alice, settings):
    settings.AVATAR_POLL_FIRST_DELAY = 2
    start = timezone.now()
    with freeze_time(start):
        assert generation.first_poll_delay() == 2
    _finished_prediction(make_avatar(funded_alice, status="succeeded"), 1, 25)

    with freeze_time(start + timedelta(seconds=generation.NO_RUN_TIMES_CACHE_SECONDS + 1)):
        assert generation.first_poll_delay() == 25


@pytest.mark.django_db
def test_retry_delays_double_and_honour_the_servers_wait(settings):
    settings.AVATAR_API_RETRY_INITIAL_DELAY = 1
    settings.AVATAR_API_RETRY_MAX_DELAY = 10

    assert [generation.retry_delay(retries=n, retry_after=None) for n in (1, 2, 3, 5)] == [
        1,
        2,
        4,
        10,
    ]
    assert generation.retry_delay(retries=1, retry_after=7) == 7
    assert generation.retry_delay(retries=1, retry_after=600) == 10


# --- across processes ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_create_whose_answer_was_lost_is_found_not_made_twice(
    pipeline, funded_alice, alice_client
):
    pipeline.drop_connection(on="create", after_create=True)

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert done["status"] == "succeeded", done
    assert len(creates(pipeline)) == 1, "the lost prediction was adopted, not created again"
    assert len(pipeline.predictions()) == 1
    assert ledger_for(done["id"]) == [("spend", -1)]


@pytest.mark.django_db(transaction=True)
def test_a_large_selfie_goes_through_the_files_api(pipeline, funded_alice, settings):
    noisy = Image.effect_noise((1400, 1400), 120).convert("RGB")
    selfie = prepare_selfie_from_settings(encode(noisy, "JPEG", quality=95))
    assert len(selfie.content) > replicate_client.DATA_URI_MAX_BYTES
    avatar = make_avatar(funded_alice, create_selfie_session(owner=funded_alice, selfie=selfie))

    generation.enqueue_submission(avatar.pk)  # outside a transaction: sent at once

    wait_for(lambda: Avatar.objects.get(pk=avatar.pk).is_terminal, timeout=30)
    avatar.refresh_from_db()
    assert avatar.status == "succeeded", avatar.error_detail
    [upload] = pipeline.requests(method="POST", path="/v1/files")
    [create] = creates(pipeline)
    [image] = create["body"]["input"]["input_images"]
    assert image.startswith(pipeline.base_url) and "/v1/files/" in image
    assert upload["body"]
    deleted = wait_for(lambda: pipeline.files()["deletions"], timeout=10, message="deletion")
    [file_id] = [d["file_id"] for d in deleted]
    assert file_id in image, "the selfie left Replicate once used"
    wait_for(
        lambda: avatar.predictions.get().input_file_id == "",
        timeout=10,
        message="its id forgotten, so no erasure asks Replicate again",
    )


def _selfie(size: tuple[int, int]) -> bytes:
    return prepare_selfie_from_settings(encode(fixture_image(size), "JPEG")).content


@pytest.mark.django_db(transaction=True)
def test_a_lost_create_is_adopted_only_when_exactly_one_prediction_of_its_selfie_matches(
    pipeline, funded_alice, settings
):
    client = pipeline.replicate_client()
    fields = {"prompt": "same words", "user_id": "same-user"}
    since = timezone.now() - timedelta(seconds=5)
    ours, theirs = _selfie((600, 800)), _selfie((640, 800))
    digest = hashlib.sha256(ours).hexdigest()

    def create(selfie: bytes = ours):
        image = replicate_client.data_uri(selfie, "image/jpeg")
        return client.models.predictions.create(
            model="openai/gpt-image-1",
            input={**fields, "input_images": [image], "openai_api_key": "sk-test"},
        )

    def find(**options):
        return replicate_client.find_recent_prediction(
            input_fields=fields, image_sha256=digest, **{"created_after": since, **options}
        )

    theirs_first = create(theirs)  # the same prompt for the same user, from another selfie
    first = create()
    found = find()
    assert (found.state.id, found.input_file_id) == (first.id, "")
    assert theirs_first.id != first.id
    assert find(exclude={first.id}) is None, "another selfie's prediction is never ours"
    create()
    assert find() is None, "two could be ours: neither is taken"
    assert find(created_after=timezone.now() + timedelta(seconds=60)) is None


@pytest.mark.django_db(transaction=True)
def test_a_lost_create_from_an_upload_is_adopted_with_its_upload(pipeline, funded_alice):
    client = pipeline.replicate_client()
    fields = {"prompt": "uploaded words", "user_id": "same-user"}
    ours, theirs = _selfie((600, 800)), _selfie((640, 800))
    since = timezone.now() - timedelta(seconds=5)
    uploads = {}
    for name, selfie in (("ours", ours), ("theirs", theirs)):
        uploads[name] = replicate_client.upload_file(
            selfie, filename=f"{name}.jpg", content_type="image/jpeg"
        )
        client.models.predictions.create(
            model="openai/gpt-image-1",
            input={**fields, "input_images": [uploads[name].url], "openai_api_key": "sk-test"},
        )

    found = replicate_client.find_recent_prediction(
        input_fields=fields, image_sha256=hashlib.sha256(ours).hexdigest(), created_after=since
    )

    assert found is not None
    assert found.input_file_id == uploads["ours"].id, "recorded, so that it is deleted"


@pytest.mark.django_db
def test_one_bad_row_does_not_stop_the_sweeper(funded_alice, settings, monkeypatch):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 10
    bad, good = make_avatar(funded_alice), make_avatar(funded_alice)
    Avatar.objects.update(next_poll_at=timezone.now() - timedelta(hours=1))
    real_enqueue = generation.enqueue_step

    def enqueue_failing_for_bad(avatar_id, seq, countdown=0):
        if avatar_id == bad.pk:
            raise RuntimeError("broken row")
        real_enqueue(avatar_id, seq, countdown)

    monkeypatch.setattr(generation, "enqueue_step", enqueue_failing_for_bad)

    counts = generation.sweep_avatars()

    assert counts == {"redriven": 1, "timed_out": 0, "errors": 1}
    assert Avatar.objects.get(pk=good.pk).poll_seq == 1
    assert Avatar.objects.get(pk=bad.pk).poll_seq == 0, "its savepoint was rolled back"


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_submits_an_avatar_whose_first_message_was_lost(
    pipeline, funded_alice, settings
):
    avatar = make_avatar(funded_alice)  # never enqueued, as if Redis had been down
    Avatar.objects.filter(pk=avatar.pk).update(next_poll_at=timezone.now() - timedelta(hours=1))

    counts = generation.sweep_avatars()

    assert counts == {"redriven": 1, "timed_out": 0, "errors": 0}
    wait_for(lambda: Avatar.objects.get(pk=avatar.pk).is_terminal, timeout=30)
    assert Avatar.objects.get(pk=avatar.pk).status == "succeeded"
    assert ledger_for(str(avatar.pk)) == [("spend", -1)]


@pytest.mark.django_db
def test_the_sweeper_leaves_steps_that_are_not_overdue(funded_alice, settings):
    make_avatar(funded_alice, status="running", attempts=1)
    Avatar.objects.update(next_poll_at=timezone.now() + timedelta(seconds=5))

    assert generation.sweep_avatars() == {"redriven": 0, "timed_out": 0, "errors": 0}


@pytest.mark.django_db
def test_the_sweeper_fails_and_refunds_what_is_past_its_hard_deadline(funded_alice, settings):
    start = timezone.now()
    avatar = make_avatar(
        funded_alice,
        status="running",
        attempts=1,
        deadline_at=start + timedelta(seconds=settings.AVATAR_GENERATION_TIMEOUT),
    )
    lease = generation.hard_deadline_margin().total_seconds()

    with freeze_time(avatar.deadline_at + timedelta(seconds=lease - 1)):
        assert generation.sweep_avatars()["timed_out"] == 0
    with freeze_time(avatar.deadline_at + timedelta(seconds=lease + 1)):
        assert generation.sweep_avatars()["timed_out"] == 1

    avatar.refresh_from_db()
    assert (avatar.status, avatar.error_code) == ("failed", "timeout")
    assert ledger_for(str(avatar.pk)) == [("spend", -1), ("refund", 1)]


@pytest.mark.django_db
def test_the_sweeper_gives_up_on_an_avatar_never_submitted_in_time(funded_alice, settings):
    avatar = make_avatar(funded_alice)
    later = avatar.created_at + timedelta(
        seconds=settings.AVATAR_GENERATION_TIMEOUT
        + settings.CELERY_TASK_TIME_LIMIT
        + settings.AVATAR_SWEEP_GRACE
        + 1
    )

    with freeze_time(later):
        generation.sweep_avatars()

    avatar.refresh_from_db()
    assert (avatar.status, avatar.error_code) == ("failed", "timeout")


def wait_until_all_finished(ids, *, timeout: float = 30) -> None:
    wait_for(
        lambda: not Avatar.objects.filter(pk__in=ids, status__in=generation.ACTIVE).exists(),
        timeout=timeout,
        interval=0.2,
        message="every avatar finished",
    )


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_redrive_each_avatar_once(pipeline, funded_alice, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 50
    ids = [make_avatar(funded_alice).pk for _ in range(6)]
    Avatar.objects.update(next_poll_at=timezone.now() - timedelta(hours=1))

    results = run_concurrently(lambda i: generation.sweep_avatars(batch_size=3), 2)

    assert sum(r["redriven"] for r in results) == 6, results
    wait_until_all_finished(ids)
    assert set(Avatar.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"succeeded"}
    assert len(creates(pipeline)) == 6


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_skips_a_row_another_transaction_holds(pipeline, funded_alice):
    avatar = make_avatar(funded_alice)
    Avatar.objects.update(next_poll_at=timezone.now() - timedelta(hours=1))
    locked, release = threading.Event(), threading.Event()

    def hold_lock(i: int) -> None:
        with transaction.atomic():
            Avatar.objects.select_for_update().get(pk=avatar.pk)
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=run_concurrently, args=(hold_lock, 1))
    holder.start()
    try:
        assert locked.wait(10)
        assert generation.sweep_avatars()["redriven"] == 0
    finally:
        release.set()
        holder.join(10)
    assert generation.sweep_avatars()["redriven"] == 1
    wait_until_all_finished([avatar.pk])


@pytest.mark.django_db
def test_a_session_without_its_selfie_can_not_be_generated(funded_alice):
    avatar = make_avatar(funded_alice)
    SelfieSession.objects.filter(pk=avatar.session_id).update(selfie_deleted_at=timezone.now())

    generation.advance_generation(avatar.pk, 0)

    avatar.refresh_from_db()
    assert avatar.status == "failed"
    assert ledger_for(str(avatar.pk)) == [("spend", -1), ("refund", 1)]


# --- deadlines and the provider's limits -------------------------------------------------------


def _running_with_prediction(owner, *, seconds_left: float, status: str = "processing"):
    avatar = make_avatar(
        owner,
        status="running",
        attempts=1,
        deadline_at=timezone.now() + timedelta(seconds=seconds_left),
    )
    prediction = avatar.predictions.create(number=1, prediction_id=f"p-{avatar.pk}", status=status)
    return avatar, prediction


@pytest.mark.django_db
def test_a_retryable_failure_starts_another_attempt_only_with_enough_time_left(
    funded_alice, settings
):
    settings.AVATAR_MIN_ATTEMPT_SECONDS = 120
    failed = {"status": "failed", "error": "Director: unexpected error handling prediction (E6716)"}
    roomy, roomy_prediction = _running_with_prediction(funded_alice, seconds_left=300)
    tight, tight_prediction = _running_with_prediction(funded_alice, seconds_left=100)

    again = generation.apply_prediction_state(
        roomy.pk, replicate_client.PredictionState(id=roomy_prediction.prediction_id, **failed)
    )
    ended = generation.apply_prediction_state(
        tight.pk, replicate_client.PredictionState(id=tight_prediction.prediction_id, **failed)
    )

    assert again is generation.Outcome.NEXT_ATTEMPT
    assert ended is generation.Outcome.DONE
    tight.refresh_from_db()
    assert (tight.status, tight.attempts) == ("failed", 1)
    assert "too little time left" in tight.error_detail
    assert ledger_for(str(tight.pk)) == [("spend", -1), ("refund", 1)]


@pytest.mark.django_db
def test_a_prediction_replicate_canceled_at_our_deadline_is_a_timeout(funded_alice):
    avatar, prediction = _running_with_prediction(funded_alice, seconds_left=1)

    generation.apply_prediction_state(
        avatar.pk, replicate_client.PredictionState(id=prediction.prediction_id, status="canceled")
    )

    avatar.refresh_from_db()
    assert (avatar.status, avatar.error_code) == ("failed", "timeout")
    assert ledger_for(str(avatar.pk)) == [("spend", -1), ("refund", 1)]


@pytest.mark.django_db
def test_a_webhooks_reported_state_is_applied_by_the_step_without_reading_again(
    funded_alice, monkeypatch
):
    avatar, prediction = _running_with_prediction(funded_alice, seconds_left=300)
    reported = replicate_client.PredictionState(
        id=prediction.prediction_id, status="failed", error="Your request was rejected (E005)"
    )
    assert generation.record_reported_state(avatar.pk, reported)
    assert generation.record_reported_state(avatar.pk, reported), "a retry wakes it again"

    def no_reads(prediction_id):
        raise AssertionError("the step read the prediction again")

    monkeypatch.setattr(replicate_client, "get_prediction", no_reads)
    avatar.refresh_from_db()
    generation.advance_generation(avatar.pk, avatar.poll_seq)

    avatar.refresh_from_db()
    assert avatar.status == "failed"
    assert not generation.record_reported_state(avatar.pk, reported), "applied: nothing to wake"
    assert not generation.record_reported_state(avatar.pk, reported), "applied: nothing to wake"


@pytest.mark.django_db
def test_pacing_and_the_breaker_fail_open_when_redis_is_unreachable(funded_alice, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    avatar = make_avatar(funded_alice, status="queued", attempts=1)

    assert generation._may_create_now(avatar) is True
    assert breaker.admit().allowed
    assert breaker.record_failure() is None
    assert not breaker.current_state().open


@pytest.mark.django_db
def test_steps_held_back_by_the_breaker_run_the_moment_it_closes(funded_alice, settings):
    # Given two avatars held back by an open breaker, one of which has since moved on
    settings.REPLICATE_BREAKER_THRESHOLD = 1
    breaker.record_failure()
    waiting = make_avatar(funded_alice, status="running", attempts=1, poll_seq=5)
    moved_on = make_avatar(funded_alice, status="running", attempts=1, poll_seq=4)
    later = timezone.now() + timedelta(seconds=40)
    Avatar.objects.update(next_poll_at=later)
    breaker.wait_for_close(f"{waiting.pk}:5")
    breaker.wait_for_close(f"{moved_on.pk}:3")

    # When the probe is answered, closing it
    breaker.record_answer(probe=True)

    # Then the one still waiting is due now, under a new step number; the other is untouched
    waiting.refresh_from_db()
    moved_on.refresh_from_db()
    assert waiting.poll_seq == 6 and waiting.next_poll_at < later
    assert (moved_on.poll_seq, moved_on.next_poll_at) == (4, later)
    assert breaker.take_waiters() == []
