"""Start-up checks of settings whose danger only shows in combination."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_visibility_timeout_covers_countdowns(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A countdown longer than Redis' visibility timeout gets the message delivered twice."""
    longest = settings.CELERY_LONGEST_UNACKED_SECONDS
    timeout = settings.CELERY_VISIBILITY_TIMEOUT
    if longest * 2 <= timeout:
        return []
    return [
        checks.Error(
            f"CELERY_VISIBILITY_TIMEOUT ({timeout} s) must be at least twice the longest time a "
            f"task message waits unacknowledged ({longest:g} s: largest poll countdown + largest "
            "retry pause + CELERY_TASK_TIME_LIMIT), or Redis redelivers waiting polls.",
            id="avatars.E001",
        )
    ]
