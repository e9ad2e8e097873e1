"""What users ask of the avatars app: sessions, new avatars, cancellations.

The generation itself, step by step, is in `avatars.generation`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from avatars import errors, faces, generation, prompts, spending
from avatars.models import Avatar, SelfieSession
from avatars.selfies import PreparedSelfie
from credits import services as credit_services


class SessionNotFound(Exception):
    """No such session among the user's own."""


class SessionExpired(Exception):
    """The session's selfie was deleted or is past its retention."""


class TooManyInFlight(Exception):
    """The user already has AVATAR_MAX_IN_FLIGHT_PER_USER unfinished avatars."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class AvatarFinished(Exception):
    """The avatar already succeeded or failed; there is nothing to cancel."""


class FaceCheckFailed(Exception):
    """The session's photo failed the face check and the request did not confirm it."""


class CapacityReached(Exception):
    """Today's spend reached AVATAR_DAILY_SPEND_LIMIT_USD; new avatars wait for `resets_at`."""

    def __init__(self, resets_at: datetime) -> None:
        super().__init__(resets_at)
        self.resets_at = resets_at


def create_selfie_session(*, owner: AbstractBaseUser, selfie: PreparedSelfie) -> SelfieSession:
    """Store an already validated and re-encoded selfie in a new session, with its face check."""
    session = SelfieSession(
        owner=owner,
        selfie_sha256=selfie.sha256,
        selfie_width=selfie.width,
        selfie_height=selfie.height,
    )
    if settings.SELFIE_FACE_CHECK:
        checked = faces.check_faces(selfie.content, min_fraction=settings.SELFIE_MIN_FACE_FRACTION)
        session.face_check = checked.status
        session.faces_found = checked.faces_found
        session.face_share = checked.largest_share
    session.selfie.save(f"selfie.{selfie.extension}", ContentFile(selfie.content), save=False)
    try:
        with transaction.atomic():
            session.save()
    except Exception:
        session.selfie.delete(save=False)
        raise
    return session


def _fingerprint(session_id: UUID, style: str) -> str:
    return hashlib.sha256(f"{session_id}|{style}".encode()).hexdigest()


def request_avatar(
    *,
    owner: AbstractBaseUser,
    session_id: UUID,
    style: str = prompts.DEFAULT_STYLE,
    idempotency_key: str = "",
    confirm_face_check: bool = False,
) -> tuple[Avatar, bool]:
    """Charge one avatar and queue it, in one transaction. Returns (avatar, created).

    A repeated Idempotency-Key with the same request returns the first avatar, charged once.
    Raises SessionNotFound, SessionExpired, FaceCheckFailed (unless `confirm_face_check`),
    TooManyInFlight, IdempotencyConflict, CapacityReached or
    credits.services.InsufficientCredits, having changed nothing.
    """
    if style not in prompts.STYLES:
        raise ValueError(f"unknown style {style!r}")
    fingerprint = _fingerprint(session_id, style)
    with transaction.atomic():
        # The user's row serialises one user's submissions, so the in-flight limit and the
        # idempotency check see every earlier request. Lock order: user, then (in
        # spend_credits) the credit account.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if idempotency_key:
            earlier = Avatar.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if earlier is not None:
                if earlier.idempotency_fingerprint != fingerprint:
                    raise IdempotencyConflict(idempotency_key)
                return earlier, False
        session = SelfieSession.objects.filter(pk=session_id, owner=owner).first()
        if session is None:
            raise SessionNotFound(session_id)
        if session.is_expired():
            raise SessionExpired(session_id)
        if session.face_check_failed and not confirm_face_check:
            raise FaceCheckFailed(session.face_check)
        in_flight = Avatar.objects.filter(owner=owner, status__in=generation.ACTIVE).count()
        if in_flight >= settings.AVATAR_MAX_IN_FLIGHT_PER_USER:
            raise TooManyInFlight(in_flight)
        capped = spending.check_spend_cap()
        if capped is not None:
            raise CapacityReached(capped.resets_at)
        avatar = Avatar.objects.create(
            owner=owner,
            session=session,
            style=style,
            prompt_version=prompts.PROMPT_VERSION,
            idempotency_key=idempotency_key,
            idempotency_fingerprint=fingerprint if idempotency_key else "",
            # Due at once: if the first message is lost, the sweeper submits it.
            next_poll_at=timezone.now(),
        )
        credit_services.spend_credits(
            user=owner,
            amount=settings.AVATAR_CREDIT_COST,
            reference=avatar.credit_reference,
            memo=f"avatar ({style})",
        )
        generation.enqueue_submission(avatar.pk)
    return avatar, True


def cancel_avatar(*, owner: AbstractBaseUser, avatar_id: UUID) -> Avatar:
    """Stop an unfinished avatar and refund it. Canceling a canceled avatar changes nothing."""
    avatar = Avatar.objects.get(pk=avatar_id, owner=owner)
    if avatar.status == Avatar.Status.CANCELED:
        return avatar
    generation.end_generation(
        avatar.pk, errors.CANCELED, "canceled by its owner", status=Avatar.Status.CANCELED
    )
    avatar.refresh_from_db()
    if avatar.status != Avatar.Status.CANCELED:
        raise AvatarFinished(avatar_id)
    return avatar
