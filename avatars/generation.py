"""The generation pipeline: one step at a time, each fenced, each ending in a stored state.

PostgreSQL is the source of truth; Celery messages only say "look now". A step is claimed by
bumping `poll_seq` from the value its message carries (so a duplicate or stale message does
nothing), does at most one Replicate call, and schedules the next step with a countdown. If
the message is lost, `next_poll_at` falls due and the sweeper re-drives the row.

The provider's limits are waited out, never charged to the avatar: a create waits its turn in
the account-wide pace (avatars/pacing.py) and an incident waits on the breaker
(avatars/breaker.py); only real failures of a call spend its retry budget, and every wait
ends at the generation's deadline.

Lock order everywhere: the avatar row, then (inside credits.services) the compensation row,
then the credit account row. Network calls never happen while a row lock is held.
"""

from __future__ import annotations

import enum
import logging
import random
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from avatars import breaker, costs, errors, image_models, pacing, prompts, replicate_client, storage
from avatars.errors import ErrorKind
from avatars.log_context import bind, log_context
from avatars.models import Avatar, Prediction
from avatars.replicate_client import PredictionState, ReplicateCallError
from credits import services as credit_services

logger = logging.getLogger(__name__)

ACTIVE = (Avatar.Status.QUEUED, Avatar.Status.RUNNING)


class Outcome(enum.Enum):
    CONTINUE = "continue"  # still running: poll again later
    NEXT_ATTEMPT = "next_attempt"  # a retryable failure: start the next prediction now
    DONE = "done"  # terminal, or nothing more for this caller to do


# --- scheduling ------------------------------------------------------------------------------


# The threads pool ignores Celery's task time limits, so a step is leased for what its own
# deadlines bound: one call to Replicate, and a download on top when it has an output to
# fetch (the lease is extended first). A step that outlives its lease is re-driven, which is
# harmless: a second read applies nothing twice (the row lock fences it), and a create is
# fenced by `create_fenced_until`.
def step_lease() -> timedelta:
    """How long a claimed step may take before the sweeper may assume it died."""
    return timedelta(seconds=replicate_client.CALL_DEADLINE_SECONDS)


def hard_deadline_margin() -> timedelta:
    """How long past its deadline an avatar may still be in a step: the last read, a download."""
    return step_lease() + timedelta(seconds=storage.DOWNLOAD_DEADLINE_SECONDS)


def _extend_lease(avatar: Avatar, seconds: float) -> None:
    Avatar.objects.filter(pk=avatar.pk, poll_seq=avatar.poll_seq).update(
        next_poll_at=timezone.now() + timedelta(seconds=seconds)
    )


# How long a step waits at most before it asks pacing again (its place may come sooner).
PACING_RECHECK_SECONDS = 10.0
# Run times (`predict_time`) the first poll is timed from, and how long they are trusted.
RUN_TIME_SAMPLE = 200
RUN_TIME_CACHE_SECONDS = 60.0
# Until there are any, look again soon: the first results of a fresh deployment count at once.
NO_RUN_TIMES_CACHE_SECONDS = 5.0


def _send_on_commit(task_name: str, avatar_id: UUID | str, seq: int, countdown: float) -> None:
    """Send a step message once the transaction commits; a broker outage is the sweeper's job."""
    from avatars import tasks

    task = getattr(tasks, task_name)

    def send() -> None:
        try:
            task.apply_async((str(avatar_id), seq), countdown=max(0.0, countdown))
        except Exception:
            logger.warning(
                "avatar %s: could not enqueue %s (step %s); the sweeper will re-drive it",
                avatar_id,
                task_name,
                seq,
                exc_info=True,
            )

    transaction.on_commit(send)


def enqueue_submission(avatar_id: UUID | str) -> None:
    _send_on_commit("submit_avatar_task", avatar_id, 0, 0)


def enqueue_step(avatar_id: UUID | str, seq: int, countdown: float = 0) -> None:
    _send_on_commit("poll_avatar_task", avatar_id, seq, countdown)


def _schedule(avatar_id: UUID, seq: int, countdown: float) -> None:
    """Record when the next step is due and send its message."""
    due = timezone.now() + timedelta(seconds=countdown)
    Avatar.objects.filter(pk=avatar_id, poll_seq=seq).update(next_poll_at=due)
    enqueue_step(avatar_id, seq, countdown)


_run_times: dict[str, object] = {"until": None, "first_poll": None}


def forget_run_times() -> None:
    """Drop this process's cached run time (tests; a changed model)."""
    _run_times.update(until=None, first_poll=None)


def first_poll_delay() -> float:
    """When a prediction's result may first exist: the 10th percentile of recent run times.

    Cached per process for a minute; `AVATAR_POLL_FIRST_DELAY` until there are any (then
    looked for again every few seconds).
    """
    now = timezone.now()
    if _run_times["until"] is None or now >= _run_times["until"]:
        recent = list(
            Prediction.objects.filter(status="succeeded", predict_time__isnull=False)
            .order_by("-completed_at")
            .values_list("predict_time", flat=True)[:RUN_TIME_SAMPLE]
        )
        first = settings.AVATAR_POLL_FIRST_DELAY
        if len(recent) >= 2:
            first = statistics.quantiles(recent, n=10, method="inclusive")[0]
        elif recent:
            first = recent[0]
        cached = RUN_TIME_CACHE_SECONDS if recent else NO_RUN_TIMES_CACHE_SECONDS
        _run_times.update(
            until=now + timedelta(seconds=cached),
            first_poll=min(first, settings.AVATAR_POLL_MAX_DELAY),
        )
    return float(_run_times["first_poll"])


def poll_delay(*, elapsed: float, webhooks: bool) -> float:
    """The first read when a result may first exist, then exponential backoff from there.

    With run times near their 10th percentile, reads come at about p10, +2, +4, +8 s: a result
    is seen soon after it exists, in about five reads at most.
    """
    first = first_poll_delay()
    if elapsed < first:
        delay = first - elapsed
    else:
        since_first = elapsed - first
        delay = min(
            settings.AVATAR_POLL_MAX_DELAY, max(settings.AVATAR_POLL_INITIAL_DELAY, since_first)
        )
    if webhooks:
        delay = min(settings.AVATAR_POLL_MAX_DELAY, delay * settings.AVATAR_WEBHOOK_POLL_FACTOR)
    return delay * (1 + random.random() * settings.AVATAR_POLL_JITTER)


def retry_delay(*, retries: int, retry_after: float | None) -> float:
    """Backoff for the n-th retry of a failed call, never sooner than the server asked."""
    delay = settings.AVATAR_API_RETRY_INITIAL_DELAY * 2 ** max(0, retries - 1)
    delay = max(delay, retry_after or 0)
    return min(delay, settings.AVATAR_API_RETRY_MAX_DELAY)


def webhook_url(avatar_id: UUID) -> str | None:
    if not settings.PUBLIC_BASE_URL:
        return None
    return f"{settings.PUBLIC_BASE_URL}/api/v1/webhooks/replicate/?avatar={avatar_id}"


# --- ending a generation ------------------------------------------------------------------------


def _finish_locked(avatar: Avatar, status: str, kind: ErrorKind, detail: str) -> None:
    """Move a locked, unfinished avatar to failed or canceled and refund it, in one transaction."""
    avatar.status = status
    avatar.error_code = kind.code
    avatar.error_message = kind.message
    avatar.error_detail = detail[:4000]
    avatar.completed_at = timezone.now()
    avatar.next_poll_at = None
    avatar.save(
        update_fields=[
            "status",
            "error_code",
            "error_message",
            "error_detail",
            "completed_at",
            "next_poll_at",
        ]
    )
    try:
        credit_services.compensate(reference=avatar.credit_reference, reason=kind.code)
    except credit_services.NothingToCompensate:
        logger.error("avatar %s ended without a charge to refund", avatar.pk)
    log = logger.error if kind.alerts else logger.info
    log(
        "avatar %s %s: %s (%s)",
        avatar.pk,
        status,
        kind.code,
        detail,
        extra={"error_code": kind.code},
    )
    transaction.on_commit(lambda: _leave_pacing_queue(avatar.pk))


def _leave_pacing_queue(avatar_id: UUID) -> None:
    try:
        pacing.leave_queue(str(avatar_id))
    except redis.RedisError:
        logger.warning("avatar %s: could not leave the pacing queue", avatar_id, exc_info=True)


def _lock(avatar_id: UUID | str) -> Avatar:
    return Avatar.objects.select_for_update().get(pk=avatar_id)


def _current_prediction(avatar: Avatar) -> Prediction | None:
    return avatar.predictions.filter(number=avatar.attempts).first()


def end_generation(
    avatar_id: UUID | str, kind: ErrorKind, detail: str, *, status: str = Avatar.Status.FAILED
) -> bool:
    """Fail (or cancel) an unfinished avatar with its refund, then stop its prediction.

    The avatar ends first, so the prediction's own "canceled" answer (or webhook) finds it
    terminal and changes nothing. False if it had already ended.
    """
    with transaction.atomic():
        avatar = _lock(avatar_id)
        if avatar.is_terminal:
            return False
        prediction = _current_prediction(avatar)
        _finish_locked(avatar, status, kind, detail)
    if prediction is not None:
        if prediction.status not in replicate_client.TERMINAL_STATUSES:
            cancel_prediction_quietly(prediction.prediction_id)
        forget_input_file(prediction.input_file_id)
    return True


def cancel_prediction_quietly(prediction_id: str) -> None:
    try:
        replicate_client.cancel_prediction(prediction_id)
    except ReplicateCallError as exc:
        logger.warning("could not cancel prediction %s: %s", prediction_id, exc.detail)


def forget_input_file(file_id: str) -> bool:
    """Delete a selfie we uploaded to Replicate once no prediction needs it, and forget its id.

    Best effort: False when Replicate could not confirm it (the id stays, and the cleanup of
    leftover uploads tries again). Already gone (404) is as good as deleted.
    """
    if not file_id:
        return True
    try:
        replicate_client.delete_file(file_id)
    except ReplicateCallError as exc:
        if exc.status != 404:
            logger.warning("could not delete Replicate file %s: %s", file_id, exc.detail)
            return False
    Prediction.objects.filter(input_file_id=file_id).update(input_file_id="")
    return True


# --- applying what Replicate says ------------------------------------------------------------


def _store_output(state: PredictionState) -> storage.StoredImage | ErrorKind | None:
    """Download and keep the output; an ErrorKind if it can never be had, None to try later."""
    url = state.output_url
    if state.data_removed:
        return errors.OUTPUT_UNAVAILABLE
    if url is None:
        return errors.EMPTY_OUTPUT
    try:
        return storage.store_avatar_image(storage.download_output(url))
    except storage.OutputUnreachable as exc:
        logger.warning("prediction %s: output not reachable yet: %s", state.id, exc)
        return None
    except (storage.OutputRefused, storage.OutputGone) as exc:
        logger.warning("prediction %s: output refused: %s", state.id, exc)
        return errors.OUTPUT_UNAVAILABLE


def _is_current(avatar_id: UUID | str, prediction_id: str) -> bool:
    """Whether this prediction is the running attempt of an unfinished avatar."""
    return Prediction.objects.filter(
        avatar_id=avatar_id,
        prediction_id=prediction_id,
        avatar__status__in=ACTIVE,
        number=F("avatar__attempts"),
    ).exists()


def apply_prediction_state(avatar_id: UUID | str, state: PredictionState) -> Outcome:
    """Bring an avatar up to date with its prediction; the one place both polls and webhooks use.

    Terminal avatars never change, and a state of an earlier attempt's prediction is ignored.
    """
    if not _is_current(avatar_id, state.id):
        return Outcome.DONE
    stored: storage.StoredImage | ErrorKind | None = None
    if state.status == "succeeded":
        stored = _store_output(state)  # a download: before the row lock, never under it
        if stored is None:
            return Outcome.CONTINUE
    image_used = False
    try:
        with transaction.atomic():
            avatar = _lock(avatar_id)
            prediction = avatar.predictions.filter(prediction_id=state.id).first()
            if avatar.is_terminal or prediction is None or prediction.number != avatar.attempts:
                return Outcome.DONE
            _record_prediction(avatar, prediction, state)
            outcome, image_used = _apply_locked(avatar, state, stored)
    finally:
        if isinstance(stored, storage.StoredImage) and not image_used:
            default_storage.delete(stored.name)
    if state.is_terminal:
        forget_input_file(prediction.input_file_id)
    return outcome


def _record_prediction(avatar: Avatar, prediction: Prediction, state: PredictionState) -> None:
    """Keep what Replicate said; when it ended, what it cost (once: the avatar row is locked)."""
    prediction.status = state.status
    prediction.error = state.error or ""
    prediction.predict_time = state.predict_time
    fields = ["status", "error", "predict_time", "completed_at", "output_url"]
    if state.is_terminal and prediction.completed_at is None:
        prediction.completed_at = timezone.now()
    if state.output_url:
        prediction.output_url = state.output_url[:1000]
    if state.is_terminal and prediction.cost_usd is None:
        fields += _record_cost(avatar, prediction, state)
    prediction.save(update_fields=fields)


def _record_cost(avatar: Avatar, prediction: Prediction, state: PredictionState) -> list[str]:
    usage = costs.read_token_usage(state.logs)
    if usage is not None:
        prediction.input_text_tokens = usage.input_text_tokens
        prediction.input_image_tokens = usage.input_image_tokens
        prediction.output_tokens = usage.output_tokens
    prediction.cost_usd = costs.price_prediction(
        model=prediction.model,
        quality=prediction.quality,
        images=prediction.number_of_images if state.status == "succeeded" else 0,
        usage=usage,
    )
    Avatar.objects.filter(pk=avatar.pk).update(cost_usd=F("cost_usd") + prediction.cost_usd)
    avatar.cost_usd += prediction.cost_usd
    return ["input_text_tokens", "input_image_tokens", "output_tokens", "cost_usd"]


def _apply_locked(
    avatar: Avatar, state: PredictionState, stored: storage.StoredImage | ErrorKind | None
) -> tuple[Outcome, bool]:
    """The transition for a locked, unfinished avatar. Returns it and whether `stored` was used."""
    if not state.is_terminal:
        return Outcome.CONTINUE, False
    if state.status == "succeeded":
        if isinstance(stored, storage.StoredImage):
            avatar.status = Avatar.Status.SUCCEEDED
            avatar.image.name = stored.name
            avatar.width, avatar.height = stored.width, stored.height
            avatar.image_sha256 = stored.sha256
            avatar.completed_at = timezone.now()
            avatar.next_poll_at = None
            avatar.save()
            logger.info("avatar %s succeeded on attempt %s", avatar.pk, avatar.attempts)
            return Outcome.DONE, True
        _finish_locked(
            avatar, Avatar.Status.FAILED, stored, f"prediction {state.id}: {stored.code}"
        )
        return Outcome.DONE, False
    if state.status == "failed":
        kind = errors.classify_prediction_error(state.error)
        if kind.retryable and avatar.attempts < settings.AVATAR_MAX_ATTEMPTS:
            if _seconds_left(avatar) < settings.AVATAR_MIN_ATTEMPT_SECONDS:
                _finish_locked(
                    avatar,
                    Avatar.Status.FAILED,
                    kind,
                    f"prediction {state.id}: {state.error}; too little time left for another",
                )
                return Outcome.DONE, False
            logger.info(
                "avatar %s: attempt %s failed (%s), starting another",
                avatar.pk,
                avatar.attempts,
                kind.code,
            )
            avatar.attempts += 1
            avatar.api_retries = 0
            avatar.create_sent_at = None
            avatar.save(update_fields=["attempts", "api_retries", "create_sent_at"])
            return Outcome.NEXT_ATTEMPT, False
        _finish_locked(avatar, Avatar.Status.FAILED, kind, f"prediction {state.id}: {state.error}")
        return Outcome.DONE, False
    if _seconds_left(avatar) <= CANCEL_AFTER_SLACK_SECONDS:
        # Replicate ended it at the `Cancel-After` we sent: our deadline.
        _finish_locked(avatar, Avatar.Status.FAILED, errors.TIMEOUT, _timeout_detail(avatar))
        return Outcome.DONE, False
    # Canceled or aborted by someone else: our own cancels end the avatar before they are sent.
    _finish_locked(
        avatar, Avatar.Status.CANCELED, errors.CANCELED, f"prediction {state.id} {state.status}"
    )
    return Outcome.DONE, False


# Replicate's clock and ours, and its cancel and our read, may differ by this much.
CANCEL_AFTER_SLACK_SECONDS = 5.0


def _seconds_left(avatar: Avatar) -> float:
    if avatar.deadline_at is None:
        return settings.AVATAR_GENERATION_TIMEOUT
    return (avatar.deadline_at - timezone.now()).total_seconds()


def _timeout_detail(avatar: Avatar) -> str:
    return f"no result within {settings.AVATAR_GENERATION_TIMEOUT:g} s (attempt {avatar.attempts})"


def hand_off_reported_state(avatar_id: UUID | str, state: PredictionState) -> bool:
    """Keep what a webhook reported and wake the avatar's step to apply it; False if not ours.

    No download and no row lock here: the webhook's request stays short, and the worker's
    step applies the recorded state exactly as it would a read.
    """
    if not record_reported_state(avatar_id, state):
        return False
    wake_generation(avatar_id)
    return True


def record_reported_state(avatar_id: UUID | str, state: PredictionState) -> bool:
    """Record a terminal state of the current attempt's prediction; True while it is unapplied.

    A report recorded before (Replicate retrying a delivery whose wake failed) is still True,
    so the retry wakes the step again.
    """
    if not state.is_terminal:
        return False
    current = Prediction.objects.filter(
        avatar_id=avatar_id,
        prediction_id=state.id,
        avatar__status__in=ACTIVE,
        number=F("avatar__attempts"),
    )
    updated = current.exclude(status__in=replicate_client.TERMINAL_STATUSES).update(
        status=state.status,
        error=state.error or "",
        predict_time=state.predict_time,
        output_url=(state.output_url or "")[:1000],
        reported_at=timezone.now(),
    )
    return bool(updated) or current.filter(reported_at__isnull=False).exists()


def _reported_state(prediction: Prediction) -> PredictionState | None:
    """What a webhook reported and no step has applied yet, as a read would have shown it."""
    if prediction.reported_at is None:
        return None
    return PredictionState(
        id=prediction.prediction_id,
        status=prediction.status,
        output=prediction.output_url or None,
        error=prediction.error or None,
        metrics={"predict_time": prediction.predict_time} if prediction.predict_time else {},
    )


# --- the step --------------------------------------------------------------------------------


def _claim(avatar_id: UUID | str, seq: int) -> Avatar | None:
    """Take the step numbered `seq`, or None if it is stale, duplicated or the avatar ended."""
    lease_until = timezone.now() + step_lease()
    claimed = Avatar.objects.filter(pk=avatar_id, poll_seq=seq, status__in=ACTIVE).update(
        poll_seq=F("poll_seq") + 1, next_poll_at=lease_until
    )
    if not claimed:
        return None
    return Avatar.objects.get(pk=avatar_id)


def advance_generation(avatar_id: UUID | str, seq: int) -> None:
    """Do the next thing for one avatar: start it, create its prediction, or poll it."""
    avatar = _claim(avatar_id, seq)
    if avatar is None:
        return
    if avatar.deadline_at is None:
        avatar = _start(avatar)
    bind(attempt=avatar.attempts)
    prediction = _current_prediction(avatar)
    if prediction is None:
        if _seconds_left(avatar) <= 0:
            end_generation(avatar.pk, errors.TIMEOUT, _timeout_detail(avatar))
        else:
            _create_prediction(avatar)
        return
    bind(prediction_id=prediction.prediction_id)
    _poll_prediction(avatar, prediction)


def _poll_prediction(avatar: Avatar, prediction: Prediction) -> None:
    """Read the prediction (or what its webhook reported) and apply it.

    A failed read of a running prediction is not a failed generation: the next read comes
    later. Past the deadline, the read is the last one: a result that exists is still kept.
    """
    state = _reported_state(prediction)
    if state is None:
        try:
            state = replicate_client.get_prediction(prediction.prediction_id)
        except ReplicateCallError as exc:
            _after_read_error(avatar, prediction, exc)
            return
    if state.status == "succeeded":
        _extend_lease(avatar, storage.DOWNLOAD_DEADLINE_SECONDS)  # its output is fetched now
    outcome = apply_prediction_state(avatar.pk, state)
    if outcome is Outcome.NEXT_ATTEMPT:
        _schedule(avatar.pk, avatar.poll_seq, retry_delay(retries=1, retry_after=None))
    elif outcome is Outcome.CONTINUE:
        if _seconds_left(avatar) <= 0:
            end_generation(avatar.pk, errors.TIMEOUT, _timeout_detail(avatar))
        else:
            _schedule_within_deadline(avatar, _next_poll_delay(avatar, prediction))


def _after_read_error(avatar: Avatar, prediction: Prediction, exc: ReplicateCallError) -> None:
    if not exc.retryable:
        end_generation(avatar.pk, exc.kind, f"Replicate call failed: {exc.detail}")
    elif _seconds_left(avatar) <= 0:
        end_generation(avatar.pk, errors.TIMEOUT, f"{_timeout_detail(avatar)}; {exc.detail}")
    elif exc.incident:
        _hold_for_incident(avatar, exc.retry_after or 1.0, exc)
    else:
        logger.warning("avatar %s: could not read its prediction: %s", avatar.pk, exc.detail)
        delay = max(_next_poll_delay(avatar, prediction), exc.retry_after or 0)
        _schedule_within_deadline(avatar, delay)


def _hold_for_incident(avatar: Avatar, wait: float, cause: ReplicateCallError | None) -> None:
    """Wait for the breaker's next probe, or to be woken as soon as it closes."""
    _wait_or_time_out(avatar, wait, cause)
    breaker.wait_for_close(f"{avatar.pk}:{avatar.poll_seq}")


def wake_breaker_waiters(sender=None, *, open: bool, **kwargs) -> int:
    """The breaker closed: run at once the steps it held back, unless they moved on meanwhile."""
    if open:
        return 0
    woken = 0
    for member in breaker.take_waiters():
        avatar_id, _, seq = member.partition(":")
        try:
            woken += _wake_step(avatar_id, int(seq))
        except Exception:
            logger.warning("could not wake avatar %s after the incident", avatar_id, exc_info=True)
    if woken:
        logger.info("breaker closed: %s waiting avatars woken", woken)
    return woken


def _next_poll_delay(avatar: Avatar, prediction: Prediction) -> float:
    elapsed = (timezone.now() - prediction.created_at).total_seconds()
    return poll_delay(elapsed=elapsed, webhooks=webhook_url(avatar.pk) is not None)


def _schedule_within_deadline(avatar: Avatar, delay: float) -> None:
    """Schedule the next step, no later than just after the deadline (for the last read)."""
    _schedule(avatar.pk, avatar.poll_seq, min(delay, max(_seconds_left(avatar), 0) + 0.05))


def _start(avatar: Avatar) -> Avatar:
    """Start the clock. The avatar stays queued until Replicate has accepted its prediction."""
    now = timezone.now()
    Avatar.objects.filter(pk=avatar.pk, deadline_at__isnull=True).update(
        attempts=1,
        submitted_at=now,
        deadline_at=now + timedelta(seconds=settings.AVATAR_GENERATION_TIMEOUT),
    )
    return Avatar.objects.get(pk=avatar.pk)


def _after_create_error(avatar: Avatar, exc: ReplicateCallError) -> None:
    """Wait out a 429 or an incident; retry a real failure within the budget; else end it."""
    if exc.kind is errors.PROVIDER_RATE_LIMITED:
        rate = _record_throttled(exc.retry_after)
        logger.info(
            "avatar %s: Replicate asked to wait %s s; creates now paced at %.2f a second",
            avatar.pk,
            exc.retry_after,
            rate,
        )
        _wait_or_time_out(avatar, exc.retry_after or 1.0, exc)
        return
    if exc.incident:
        _hold_for_incident(avatar, exc.retry_after or 1.0, exc)
        return
    retries = avatar.api_retries + 1
    if exc.retryable and retries <= settings.AVATAR_API_MAX_RETRIES:
        Avatar.objects.filter(pk=avatar.pk).update(api_retries=retries)
        delay = retry_delay(retries=retries, retry_after=exc.retry_after)
        logger.warning(
            "avatar %s: Replicate call failed (%s), retry %s in %.1f s",
            avatar.pk,
            exc.detail,
            retries,
            delay,
        )
        _wait_or_time_out(avatar, delay, exc)
        return
    end_generation(avatar.pk, exc.kind, f"Replicate call failed: {exc.detail}")


def _record_throttled(retry_after: float | None) -> float:
    try:
        return pacing.record_throttled(retry_after)
    except redis.RedisError:
        logger.warning("could not record a 429 in the shared pace", exc_info=True)
        return 0.0


def _wait_or_time_out(avatar: Avatar, delay: float, cause: ReplicateCallError | None) -> None:
    """Try again after `delay`, unless the deadline comes first: then it times out, refunded."""
    left = _seconds_left(avatar)
    if left <= delay:
        detail = _timeout_detail(avatar)
        end_generation(avatar.pk, errors.TIMEOUT, f"{detail}; {cause.detail}" if cause else detail)
        return
    _schedule(avatar.pk, avatar.poll_seq, delay)


def _selfie_reference(avatar: Avatar) -> tuple[str, str]:
    """The selfie as the model will read it, and the id of the file uploaded for it, if any."""
    with avatar.session.selfie.open("rb") as selfie:
        image, uploaded = replicate_client.image_input(
            selfie.read(), filename=f"{avatar.pk}.jpg", content_type="image/jpeg"
        )
    return image, uploaded.id if uploaded else ""


# A create phase holds its fence for as long as its calls can take (the lookup, an upload, the
# create), so a step re-driven meanwhile never sends a second create; it looks again this often.
# The fence's own value is its owner's token: a step whose fence expired and was taken by
# another finds its token gone and sends nothing.
CREATE_FENCE_SECONDS = 2 * replicate_client.CALL_DEADLINE_SECONDS
FENCE_RECHECK_SECONDS = 2.0


@dataclass
class _Fence:
    until: datetime


def _take_create_fence(avatar: Avatar) -> tuple[_Fence | None, datetime]:
    """This step's fence, or None and until when another step holds it."""
    now = timezone.now()
    until = now + timedelta(seconds=CREATE_FENCE_SECONDS)
    taken = (
        Avatar.objects.filter(pk=avatar.pk, poll_seq=avatar.poll_seq)
        .filter(Q(create_fenced_until__isnull=True) | Q(create_fenced_until__lte=now))
        .update(create_fenced_until=until)
    )
    if taken:
        return _Fence(until), until
    held = Avatar.objects.values_list("create_fenced_until", flat=True).get(pk=avatar.pk)
    return None, held or now


def _release_create_fence(avatar: Avatar, fence: _Fence) -> None:
    Avatar.objects.filter(pk=avatar.pk, create_fenced_until=fence.until).update(
        create_fenced_until=None
    )


def _create_prediction(avatar: Avatar) -> None:
    """Create the current attempt's prediction, unless an earlier try already did."""
    fence, held_until = _take_create_fence(avatar)
    if fence is None:
        wait = (held_until - timezone.now()).total_seconds()
        _schedule(avatar.pk, avatar.poll_seq, min(max(wait, 0.05), FENCE_RECHECK_SECONDS))
        return
    try:
        _create_within_fence(avatar, fence)
    finally:
        _release_create_fence(avatar, fence)


def _create_within_fence(avatar: Avatar, fence: _Fence) -> None:
    """Adopt the prediction a lost create made, or wait for a turn and create one."""
    webhook = webhook_url(avatar.pk)
    file_id = ""
    found = False
    try:
        lost = _find_lost_prediction(avatar, webhook) if avatar.create_sent_at else None
        found = lost is not None
        state, file_id = (lost.state, lost.input_file_id) if lost else (None, "")
        if state is None:
            if avatar.session.is_expired():
                end_generation(avatar.pk, errors.INTERNAL, "the selfie was deleted before use")
                return
            if not _may_create_now(avatar):
                return
            image, file_id = _selfie_reference(avatar)
            state = _send_create(avatar, image, webhook, fence)
            if state is None:
                forget_input_file(file_id)
                return
            _record_created()
    except ReplicateCallError as exc:
        if not exc.outcome_unknown:
            forget_input_file(file_id)
        _after_create_error(avatar, exc)
        return
    try:
        stored = _store_prediction(avatar, state, file_id)
    except IntegrityError:
        _after_prediction_taken(avatar, state, file_id, found=found)
        return
    if not stored:
        return
    bind(prediction_id=state.id)
    logger.info("avatar %s: attempt %s is prediction %s", avatar.pk, avatar.attempts, state.id)
    _schedule_within_deadline(avatar, poll_delay(elapsed=0, webhooks=webhook is not None))


def _after_prediction_taken(
    avatar: Avatar, state: PredictionState, file_id: str, *, found: bool
) -> None:
    """Storing the prediction clashed with one stored already: whose is it, and whose is ours?"""
    owner = Prediction.objects.filter(prediction_id=state.id).values_list("avatar_id", flat=True)
    owner = owner.first()
    if owner == avatar.pk:
        return  # a step re-driven meanwhile adopted it (it polls it now): nothing to undo
    if owner is not None:
        # Another avatar stored this prediction first: it was not ours. Look again later.
        logger.warning("avatar %s: prediction %s belongs to another avatar", avatar.pk, state.id)
        _schedule(avatar.pk, avatar.poll_seq, retry_delay(retries=1, retry_after=None))
    elif not found:
        # This attempt already has another prediction: one per attempt, so this one is stopped.
        logger.warning("avatar %s: extra prediction %s canceled", avatar.pk, state.id)
        cancel_prediction_quietly(state.id)
        forget_input_file(file_id)


def _may_create_now(avatar: Avatar) -> bool:
    """Not while the breaker holds calls back, and only in turn; else the step is rescheduled."""
    held = breaker.held_back_for()
    if held > 0:
        _hold_for_incident(avatar, held, None)
        return False
    try:
        turn = pacing.take_turn(str(avatar.pk), submitted_at=avatar.created_at.timestamp())
    except redis.RedisError:
        logger.warning("avatar %s: pacing unreachable, creating unpaced", avatar.pk, exc_info=True)
        return True
    if turn.granted:
        return True
    _wait_or_time_out(avatar, min(turn.wait, PACING_RECHECK_SECONDS), None)
    return False


def _record_created() -> None:
    try:
        pacing.record_created()
    except redis.RedisError:
        logger.warning("could not record a create in the shared pace", exc_info=True)


def model_input(avatar: Avatar, image: str) -> dict:
    """What the model is asked for this avatar: its prompt version and style, and the selfie."""
    return image_models.build_model_input(
        image_models.get_model(avatar.model),
        prompt=prompts.build_prompt(avatar.style, avatar.prompt_version),
        image=image,
        user_id=prompts.opaque_user_id(avatar.owner_id),
        openai_api_key=settings.OPENAI_API_KEY,
        quality=avatar.quality,
    )


def _send_create(
    avatar: Avatar, image: str, webhook: str | None, fence: _Fence
) -> PredictionState | None:
    """Create the prediction, or None when the avatar ended or the fence was lost (none sent)."""
    # Marked before sending (the first time only, so a lookup covers every earlier try): if we
    # never learn the outcome, the next step looks for the prediction before creating another.
    # The same update proves the fence is still ours and renews it for the create call.
    first_try = avatar.create_sent_at is None
    now = timezone.now()
    renewed = now + timedelta(seconds=replicate_client.CALL_DEADLINE_SECONDS)
    still_ours = Avatar.objects.filter(
        pk=avatar.pk, status__in=ACTIVE, create_fenced_until=fence.until
    ).update(create_sent_at=Coalesce(F("create_sent_at"), now), create_fenced_until=renewed)
    if not still_ours:
        return None
    fence.until = renewed
    try:
        return replicate_client.create_prediction(
            model=avatar.model,
            input=model_input(avatar, image),
            webhook=webhook,
            cancel_after=_seconds_left(avatar),
        )
    except ReplicateCallError as exc:
        if first_try and not exc.outcome_unknown:
            Avatar.objects.filter(pk=avatar.pk).update(create_sent_at=None)
        raise


def _find_lost_prediction(
    avatar: Avatar, webhook: str | None
) -> replicate_client.FoundPrediction | None:
    """The prediction an earlier create may have made from this selfie before we lost its
    answer, and the upload it used (so that it is deleted when the prediction ends)."""
    known = set(
        Prediction.objects.filter(avatar__owner_id=avatar.owner_id).values_list(
            "prediction_id", flat=True
        )
    )
    found = replicate_client.find_recent_prediction(
        input_fields={
            "prompt": prompts.build_prompt(avatar.style, avatar.prompt_version),
            "user_id": prompts.opaque_user_id(avatar.owner_id),
        },
        image_sha256=avatar.session.selfie_sha256,
        webhook=webhook,
        # Replicate's clock and ours may differ a little.
        created_after=avatar.create_sent_at - timedelta(seconds=60),
        exclude=known,
    )
    if found is not None:
        logger.info("avatar %s: found prediction %s from a lost create", avatar.pk, found.state.id)
    return found


def _store_prediction(avatar: Avatar, state: PredictionState, file_id: str) -> bool:
    """Keep the new prediction's id at once. False when the avatar ended meanwhile."""
    with transaction.atomic():
        locked = _lock(avatar.pk)
        if not locked.is_terminal:
            Prediction.objects.create(
                avatar=locked,
                number=locked.attempts,
                prediction_id=state.id,
                status=state.status,
                input_file_id=file_id,
                model=locked.model,
                quality=locked.quality,
            )
            locked.status = Avatar.Status.RUNNING
            locked.create_sent_at = None
            locked.api_retries = 0
            locked.save(update_fields=["status", "create_sent_at", "api_retries"])
            return True
    if Prediction.objects.filter(avatar_id=avatar.pk, prediction_id=state.id).exists():
        return False  # a re-driven step adopted it, and the avatar has ended with it since
    # Canceled (or timed out) while we were creating it: stop paying for it.
    cancel_prediction_quietly(state.id)
    forget_input_file(file_id)
    return False


# --- outside nudges --------------------------------------------------------------------------


def wake_generation(avatar_id: UUID | str) -> bool:
    """Run the next step now, superseding any waiting poll message."""
    with transaction.atomic():
        claimed = Avatar.objects.filter(pk=avatar_id, status__in=ACTIVE).update(
            poll_seq=F("poll_seq") + 1, next_poll_at=timezone.now()
        )
        if claimed:
            seq = Avatar.objects.values_list("poll_seq", flat=True).get(pk=avatar_id)
            enqueue_step(avatar_id, seq)
    return bool(claimed)


def _wake_step(avatar_id: str, seq: int) -> bool:
    """Run step `seq` now instead of at its countdown, if it is still the one waiting."""
    with transaction.atomic():
        claimed = Avatar.objects.filter(pk=avatar_id, poll_seq=seq, status__in=ACTIVE).update(
            poll_seq=seq + 1, next_poll_at=timezone.now()
        )
        if claimed:
            enqueue_step(avatar_id, seq + 1)
    return bool(claimed)


def sweep_avatars(*, batch_size: int = 500) -> dict[str, int]:
    """Re-drive steps whose message was lost, and end what is past its hard deadline.

    Rows are claimed with SKIP LOCKED so two sweepers never take the same one; each row is
    handled in a savepoint of its own, so one bad row can not stop the sweeper.
    """
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.AVATAR_SWEEP_GRACE)
    # Past its deadline by more than a step may take: no step is going to end it any more.
    hard_deadline = now - hard_deadline_margin()
    never_started = timedelta(seconds=settings.AVATAR_GENERATION_TIMEOUT)
    counts = {"redriven": 0, "timed_out": 0, "errors": 0}
    ended: list[Prediction] = []
    with transaction.atomic():
        rows = (
            Avatar.objects.select_for_update(skip_locked=True)
            .filter(status__in=ACTIVE)
            .filter(
                Q(next_poll_at__lt=overdue)
                | Q(deadline_at__lt=hard_deadline)
                | Q(deadline_at__isnull=True, created_at__lt=hard_deadline - never_started)
            )
            .order_by("next_poll_at")[:batch_size]
        )
        for avatar in rows:
            try:
                with transaction.atomic(), log_context(avatar_id=str(avatar.pk)):
                    if (avatar.deadline_at or avatar.created_at + never_started) < hard_deadline:
                        prediction = _current_prediction(avatar)
                        _finish_locked(
                            avatar, Avatar.Status.FAILED, errors.TIMEOUT, "past its hard deadline"
                        )
                        ended += [prediction] if prediction else []
                        counts["timed_out"] += 1
                        continue
                    avatar.poll_seq += 1
                    avatar.next_poll_at = now + step_lease()
                    avatar.save(update_fields=["poll_seq", "next_poll_at"])
                    enqueue_step(avatar.pk, avatar.poll_seq)
                    counts["redriven"] += 1
            except Exception:
                logger.exception("sweeper: could not handle avatar %s", avatar.pk)
                counts["errors"] += 1
    for prediction in ended:
        if prediction.status not in replicate_client.TERMINAL_STATUSES:
            cancel_prediction_quietly(prediction.prediction_id)
        forget_input_file(prediction.input_file_id)
    if any(counts.values()):
        logger.info("sweeper: %s", counts)
    return counts
