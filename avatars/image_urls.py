"""Which URL reaches an avatar image, and checking the ones we signed.

Selfies have no URL at all: MEDIA_URL is not served. An avatar image is reached through a
short-lived URL made for its owner, which can sit in an `<img src>` without an auth header:
presigned by the bucket when the storage can presign (django-storages' S3 backend), otherwise
signed by us and served by our own view. Either way it is a bearer link that expires, so the
API hands one only to the avatar's owner, and a new one with every read.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse

from avatars.models import Avatar

# Keeps these signatures apart from any other use of SECRET_KEY in the project.
SALT = "avatars.image-url"


class _SteppedTimestampSigner(signing.TimestampSigner):
    """Signs with the time rounded down to a step (a tenth of the max age, at most 5 minutes).

    So reads close together get the same URL, which browsers can cache and pages need not
    reload; a link then lives between 90% and 100% of AVATAR_IMAGE_URL_MAX_AGE.
    """

    def timestamp(self) -> str:
        step = max(1, min(300, settings.AVATAR_IMAGE_URL_MAX_AGE // 10))
        return signing.b62_encode(int(time.time()) // step * step)


class InvalidImageLink(Exception):
    """Not a link we signed: guessed, tampered with, or cut short."""


class ExpiredImageLink(Exception):
    """A link we signed, older than AVATAR_IMAGE_URL_MAX_AGE."""


def avatar_image_url(avatar: Avatar, *, request: HttpRequest | None = None) -> str | None:
    """The URL to give the avatar's owner for its image, or None while there is no image.

    The one place that decides, so a storage backend that can presign is used as it is and any
    other is served through our signed view (never through a public URL of its own).
    """
    if avatar.status != Avatar.Status.SUCCEEDED or not avatar.image:
        return None
    storage = avatar.image.storage
    if getattr(storage, "querystring_auth", False):
        # django-storages' S3 backend with a private bucket: the bucket checks the signature.
        return storage.url(avatar.image.name, expire=settings.AVATAR_IMAGE_URL_MAX_AGE)
    path = reverse("api-avatar-signed-image", args=[sign_image_token(avatar)])
    return request.build_absolute_uri(path) if request is not None else path


def sign_image_token(avatar: Avatar) -> str:
    """A token naming the avatar and its owner, with the time it was made."""
    signer = _SteppedTimestampSigner(salt=SALT)
    return signer.sign_object([avatar.pk.hex, avatar.owner_id])


def read_image_token(token: str) -> tuple[uuid.UUID, int]:
    """The (avatar id, owner id) a token names. Raises InvalidImageLink or ExpiredImageLink."""
    signer = signing.TimestampSigner(salt=SALT)
    try:
        avatar_id, owner_id = signer.unsign_object(token, max_age=settings.AVATAR_IMAGE_URL_MAX_AGE)
        return uuid.UUID(hex=avatar_id), int(owner_id)
    except signing.SignatureExpired as exc:
        raise ExpiredImageLink from exc
    except (signing.BadSignature, ValueError, TypeError, AttributeError) as exc:
        raise InvalidImageLink from exc
