"""Scheduled cleanup: keep faces and images no longer than promised, and nothing nobody owns.

Every job is idempotent (running it twice does nothing more), works in batches over an index
that holds only rows with something left to clean, logs what it did, and can dry-run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q
from django.utils import timezone

from avatars import generation
from avatars.models import Avatar, Prediction, SelfieSession, WebhookDelivery

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
IDEMPOTENCY_KEY_HOURS = 24
WEBHOOK_DELIVERY_DAYS = 2
# A file younger than this may belong to a row whose transaction has not committed yet.
ORPHAN_GRACE = timedelta(hours=1)
STORAGE_PREFIXES = ("selfies", "avatars")


def _batches(queryset, batch_size: int) -> Iterator[list]:
    """Batches by primary key, so a job never loads the whole table and restarts cleanly."""
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        rows = list(page[:batch_size])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def delete_expired_selfies(*, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> int:
    """Selfies past SELFIE_RETENTION_HOURS leave storage; the session notes when."""
    now = timezone.now()
    due = SelfieSession.objects.filter(selfie_deleted_at__isnull=True, expires_at__lte=now)
    done = 0
    for sessions in _batches(due.only("pk", "selfie"), batch_size):
        done += len(sessions)
        if dry_run:
            continue
        for session in sessions:
            if session.selfie:
                default_storage.delete(session.selfie.name)
        SelfieSession.objects.filter(pk__in=[s.pk for s in sessions]).update(
            selfie="", selfie_deleted_at=now
        )
    logger.info("cleanup: %s %d expired selfies", _verb(dry_run), done)
    return done


def delete_expired_avatar_images(*, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> int:
    """Avatar images past AVATAR_RETENTION_DAYS leave storage; the rows (and ledger) stay."""
    if settings.AVATAR_RETENTION_DAYS is None:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.AVATAR_RETENTION_DAYS)
    due = Avatar.objects.filter(completed_at__lt=cutoff).filter(~Q(image=""))
    done = 0
    for avatars in _batches(due.only("pk", "image"), batch_size):
        done += len(avatars)
        if dry_run:
            continue
        for avatar in avatars:
            default_storage.delete(avatar.image.name)
        Avatar.objects.filter(pk__in=[a.pk for a in avatars]).update(image="")
    logger.info("cleanup: %s %d expired avatar images", _verb(dry_run), done)
    return done


def forget_old_idempotency_keys(*, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> int:
    cutoff = timezone.now() - timedelta(hours=IDEMPOTENCY_KEY_HOURS)
    due = Avatar.objects.filter(created_at__lt=cutoff).filter(~Q(idempotency_key=""))
    done = 0
    for avatars in _batches(due.only("pk"), batch_size):
        done += len(avatars)
        if not dry_run:
            Avatar.objects.filter(pk__in=[a.pk for a in avatars]).update(
                idempotency_key="", idempotency_fingerprint=""
            )
    logger.info("cleanup: %s %d idempotency keys", _verb(dry_run), done)
    return done


def forget_old_webhook_deliveries(*, dry_run: bool = False) -> int:
    cutoff = timezone.now() - timedelta(days=WEBHOOK_DELIVERY_DAYS)
    due = WebhookDelivery.objects.filter(received_at__lt=cutoff)
    done = due.count() if dry_run else due.delete()[0]
    logger.info("cleanup: %s %d webhook delivery ids", _verb(dry_run), done)
    return done


def _stored_files(prefix: str) -> Iterator[str]:
    try:
        directories, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        yield f"{prefix}/{name}"
    for directory in directories:
        yield from _stored_files(f"{prefix}/{directory}")


def delete_orphaned_files(*, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> int:
    """Files under the selfie and avatar prefixes that no row points to (a crash mid-upload)."""
    cutoff = timezone.now() - ORPHAN_GRACE
    done = 0
    for prefix in STORAGE_PREFIXES:
        names = list(_stored_files(prefix))
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            known = set(
                SelfieSession.objects.filter(selfie__in=chunk).values_list("selfie", flat=True)
            ) | set(Avatar.objects.filter(image__in=chunk).values_list("image", flat=True))
            for name in chunk:
                if name in known or default_storage.get_modified_time(name) > cutoff:
                    continue
                done += 1
                if not dry_run:
                    default_storage.delete(name)
    logger.info("cleanup: %s %d orphaned files", _verb(dry_run), done)
    return done


def forget_leftover_uploads(*, batch_size: int = BATCH_SIZE) -> int:
    """Selfies still at Replicate's Files API though their generations ended: delete them.

    Most went when their prediction ended; these met a failed call then (or their generation
    ended in an erasure). Returns how many are gone now.
    """
    leftovers = (
        Prediction.objects.filter(avatar__status__in=Avatar.TERMINAL_STATUSES)
        .exclude(input_file_id="")
        .values_list("input_file_id", flat=True)
        .distinct()[:batch_size]
    )
    done = sum(generation.forget_input_file(file_id) for file_id in list(leftovers))
    if done:
        logger.info("cleanup: deleted %d leftover Replicate uploads", done)
    return done


def run_cleanup(*, dry_run: bool = False) -> dict[str, int]:
    return {
        "expired_selfies": delete_expired_selfies(dry_run=dry_run),
        "expired_avatar_images": delete_expired_avatar_images(dry_run=dry_run),
        "idempotency_keys": forget_old_idempotency_keys(dry_run=dry_run),
        "webhook_deliveries": forget_old_webhook_deliveries(dry_run=dry_run),
        "orphaned_files": delete_orphaned_files(dry_run=dry_run),
    }


def _verb(dry_run: bool) -> str:
    return "would clean" if dry_run else "cleaned"
