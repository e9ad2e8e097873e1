"""Predictions we pay for but never recorded, stopped.

A create whose answer was lost is looked up by what it sent; when several creates of one user
with the same prompt were lost together, the lookup can not tell them apart and takes none, so
the avatar creates again and the lost one runs on, billed and unused. Any running prediction
with one of our users' opaque ids, not recorded and older than a create can take to be answered
and stored, is such a stray, unless an avatar of that user is still to look for its lost create.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from avatars import prompts, replicate_client
from avatars.generation import ACTIVE, cancel_prediction_quietly
from avatars.models import Avatar, Prediction

logger = logging.getLogger(__name__)

# A create is answered within the client's read timeout and stored at once; well past that, an
# unrecorded prediction will never be stored by the step that made it.
STRAY_AFTER = timedelta(seconds=3 * replicate_client.TIMEOUT.read)
# Replicate ends a prediction of an image model well within this (a stuck one: by its own
# timeout), so older ones cost nothing more.
LOOK_BACK = timedelta(hours=1)


def cancel_stray_predictions(now: datetime | None = None) -> int:
    """Cancel running predictions of ours that no avatar holds or may still adopt."""
    now = now or timezone.now()
    since = now - LOOK_BACK
    running = [
        listed
        for listed in replicate_client.list_recent_predictions(created_after=since)
        if listed.status not in replicate_client.TERMINAL_STATUSES
        and listed.created_at is not None
        and listed.created_at <= now - STRAY_AFTER
    ]
    if not running:
        return 0
    recorded = set(
        Prediction.objects.filter(prediction_id__in=[p.id for p in running]).values_list(
            "prediction_id", flat=True
        )
    )
    # An avatar may wait in the queue before its create: look further back for their owners.
    recent = Avatar.objects.filter(
        created_at__gte=since - timedelta(seconds=settings.AVATAR_GENERATION_TIMEOUT)
    )
    ours = {prompts.opaque_user_id(owner) for owner in _owners(recent)}
    still_looking = {
        prompts.opaque_user_id(owner)
        for owner in _owners(recent.filter(status__in=ACTIVE, create_sent_at__isnull=False))
    }
    canceled = 0
    for prediction in running:
        user = prediction.input.get("user_id")
        if prediction.id in recorded or user not in ours or user in still_looking:
            continue
        logger.warning("canceling stray prediction %s (a lost create)", prediction.id)
        cancel_prediction_quietly(prediction.id)
        canceled += 1
    return canceled


def _owners(avatars) -> set[int]:
    return set(avatars.values_list("owner_id", flat=True).distinct())
