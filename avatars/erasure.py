"""Erasure on request: a session's (or a user's) faces leave every place we put them.

Erased: the selfie file, every avatar image, and the fields that describe them (the selfie's
and images' hashes, Replicate's output URLs and raw errors, the client's idempotency keys).
Running generations are canceled and refunded first. The selfies we uploaded to Replicate's
Files API go when their generations end (`generation.forget_input_file`); any Replicate could
not delete then are retried by the cleanup every minute, never inside the erasure's request.

Kept: the session and avatar rows as bare records (ids, style, status, error code, times),
because the ledger's `avatar:<uuid>` references point at them and money records are kept. Such
a reference then resolves to what was bought and how it ended, never to a face or an image.

Every step is idempotent, so a repeated request (or a retry after a failure part-way) finishes
what is left and changes nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from avatars import errors, generation
from avatars.models import Avatar, Prediction, SelfieSession
from avatars.services import SessionNotFound

logger = logging.getLogger(__name__)

CANCEL_DETAIL = "canceled: personal data erased on request"


@dataclass(frozen=True)
class ErasureResult:
    """What one erasure did, for the admin's message and the log."""

    sessions: int = 0
    generations_canceled: int = 0
    files_deleted: int = 0

    def __add__(self, other: ErasureResult) -> ErasureResult:
        return ErasureResult(
            sessions=self.sessions + other.sessions,
            generations_canceled=self.generations_canceled + other.generations_canceled,
            files_deleted=self.files_deleted + other.files_deleted,
        )


def erase_session(*, owner: AbstractBaseUser, session_id: UUID) -> ErasureResult:
    """Erase one of `owner`'s sessions. Raises SessionNotFound for anyone else's.

    Erasing an erased session is allowed and finishes anything an earlier try left behind.
    """
    with transaction.atomic():
        # The user's row, as `request_avatar` takes it: a submission on this session either
        # committed before (its avatar is canceled below) or sees the selfie gone and is refused.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        session = SelfieSession.objects.filter(pk=session_id, owner=owner).first()
        if session is None:
            raise SessionNotFound(session_id)
        if session.selfie_deleted_at is None:
            session.selfie_deleted_at = timezone.now()
            session.save(update_fields=["selfie_deleted_at"])
    result = _erase(session)
    logger.info(
        "erasure: session %s of user %s erased (%s generations canceled, %s files deleted)",
        session.pk,
        owner.pk,
        result.generations_canceled,
        result.files_deleted,
    )
    return result


def erase_user_data(
    *, user: AbstractBaseUser, actor: AbstractBaseUser | None = None
) -> ErasureResult:
    """Erase every session of `user`: the account self-service and the staff action.

    `actor` is the staff user acting on the user's request, for the log.
    """
    total = ErasureResult()
    session_ids = list(
        SelfieSession.objects.filter(owner=user).order_by("created_at").values_list("pk", flat=True)
    )
    for session_id in session_ids:
        total += erase_session(owner=user, session_id=session_id)
    logger.info(
        "erasure: all %s sessions of user %s erased (requested by %s)",
        total.sessions,
        user.pk,
        f"staff user {actor.pk}" if actor is not None else "the user",
    )
    return total


def _erase(session: SelfieSession) -> ErasureResult:
    # The selfies uploaded to Replicate are not deleted here, one call each inside the request:
    # those of ended generations are the cleanup's (`forget_leftover_uploads`, every minute).
    canceled = _cancel_running_generations(session)
    deleted = _delete_stored_files(session)
    return ErasureResult(sessions=1, generations_canceled=canceled, files_deleted=deleted)


def _cancel_running_generations(session: SelfieSession) -> int:
    """End (and refund) unfinished avatars first, so none stores an image after the purge.

    `end_generation` also cancels the prediction and deletes the selfie it uploaded.
    """
    active = Avatar.objects.filter(session=session, status__in=generation.ACTIVE)
    canceled = 0
    for avatar_id in active.values_list("pk", flat=True):
        if generation.end_generation(
            avatar_id, errors.CANCELED, CANCEL_DETAIL, status=Avatar.Status.CANCELED
        ):
            canceled += 1
    return canceled


def _delete_stored_files(session: SelfieSession) -> int:
    """Delete the files, then the fields naming them: a failure between leaves names to retry."""
    session.refresh_from_db()
    files = [session.selfie] if session.selfie else []
    avatars = Avatar.objects.filter(session=session).exclude(image="")
    files += [avatar.image for avatar in avatars]
    for file in files:
        file.storage.delete(file.name)
    with transaction.atomic():
        SelfieSession.objects.filter(pk=session.pk).update(selfie="", selfie_sha256="")
        Avatar.objects.filter(session=session).update(
            image="",
            image_sha256="",
            error_detail="",
            idempotency_key="",
            idempotency_fingerprint="",
        )
        Prediction.objects.filter(avatar__session=session).update(output_url="", error="")
    return len(files)
