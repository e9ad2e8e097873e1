"""The baseline: the common design, one Celery task that blocks on `replicate.run()`.

It does what the pipeline does for a successful avatar (read the selfie, send the same input,
download, check and store the output, mark the avatar succeeded) but holds its worker slot for
the whole generation. It lives here, not in the service, and runs only in benchmarks.
"""

from __future__ import annotations

from functools import lru_cache

import replicate
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from avatars import generation, replicate_client, storage
from avatars.models import Avatar


@lru_cache(maxsize=1)
def _client() -> replicate.Client:
    """One client per process, like the module-level `replicate.run()` most code calls."""
    return replicate.Client(
        api_token=settings.REPLICATE_API_TOKEN, base_url=settings.REPLICATE_BASE_URL
    )


@shared_task(ignore_result=True)
def generate_blocking_task(avatar_id: str) -> None:
    avatar = Avatar.objects.select_related("session").get(pk=avatar_id)
    Avatar.objects.filter(pk=avatar.pk).update(
        status=Avatar.Status.RUNNING, attempts=1, submitted_at=timezone.now()
    )
    with avatar.session.selfie.open("rb") as selfie:
        image = replicate_client.data_uri(selfie.read(), "image/jpeg")
    model_input = generation.model_input(avatar, image)
    # `user_id` is an opaque id for the provider's abuse tracking; the job's own id lets the
    # benchmark match each prediction to its avatar (replicate.run() does not return the id).
    model_input["user_id"] = str(avatar.pk)
    output = _client().run(settings.REPLICATE_MODEL, input=model_input, use_file_output=False)
    url = output[0] if isinstance(output, list) else output
    stored = storage.store_avatar_image(storage.download_output(url))
    Avatar.objects.filter(pk=avatar.pk).update(
        status=Avatar.Status.SUCCEEDED,
        image=stored.name,
        width=stored.width,
        height=stored.height,
        image_sha256=stored.sha256,
        completed_at=timezone.now(),
        next_poll_at=None,
    )
