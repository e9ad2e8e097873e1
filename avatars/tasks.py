"""Celery tasks: thin, take ids, call one service. Retries live in the services' scheduling."""

from __future__ import annotations

from celery import shared_task

from avatars import cleanup, generation, monitoring, schema_guard, strays
from avatars.log_context import log_context


@shared_task(ignore_result=True)
def submit_avatar_task(avatar_id: str, seq: int = 0) -> None:
    """The first step of a new avatar, sent when the request that created it commits."""
    with log_context(avatar_id=avatar_id):
        generation.advance_generation(avatar_id, seq)


@shared_task(ignore_result=True)
def poll_avatar_task(avatar_id: str, seq: int) -> None:
    """A later step: create the attempt's prediction or read it, then schedule the next."""
    with log_context(avatar_id=avatar_id):
        generation.advance_generation(avatar_id, seq)


@shared_task(ignore_result=True)
def sweep_avatars_task() -> dict[str, int]:
    return generation.sweep_avatars()


@shared_task(ignore_result=True)
def cancel_stray_predictions_task() -> int:
    return strays.cancel_stray_predictions()


@shared_task(ignore_result=True)
def forget_leftover_uploads_task() -> int:
    return cleanup.forget_leftover_uploads()


@shared_task(ignore_result=True)
def cleanup_task() -> dict[str, int]:
    return cleanup.run_cleanup()


@shared_task(ignore_result=True)
def check_alerts_task() -> list[str]:
    return monitoring.check_alerts()


@shared_task(ignore_result=True)
def check_model_schema_task() -> list[str]:
    return schema_guard.check_model_schema()


def check_model_schema_at_worker_start(sender=None, **kwargs) -> None:
    """`worker_ready`: a worker that starts checks the schema once, not only at the daily run.

    Only a worker sends `worker_ready` (not beat, not the web), so it is connected everywhere.
    """
    check_model_schema_task.delay()
