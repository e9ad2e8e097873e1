"""Workflows of the avatars app: sessions now; generation joins them in the pipeline."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction

from avatars.models import SelfieSession
from avatars.selfies import PreparedSelfie


def create_selfie_session(*, owner: AbstractBaseUser, selfie: PreparedSelfie) -> SelfieSession:
    """Store an already validated and re-encoded selfie in a new session."""
    session = SelfieSession(
        owner=owner,
        selfie_sha256=selfie.sha256,
        selfie_width=selfie.width,
        selfie_height=selfie.height,
    )
    session.selfie.save(f"selfie.{selfie.extension}", ContentFile(selfie.content), save=False)
    try:
        with transaction.atomic():
            session.save()
    except Exception:
        session.selfie.delete(save=False)
        raise
    return session
