from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Avatars"

    def ready(self) -> None:
        from avatars import breaker, checks, generation, monitoring  # noqa: F401  (the checks)

        breaker.breaker_changed.connect(monitoring.follow_breaker, dispatch_uid="follow-breaker")
        breaker.breaker_changed.connect(
            generation.wake_breaker_waiters, dispatch_uid="wake-breaker-waiters"
        )
