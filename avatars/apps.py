from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Avatars"

    def ready(self) -> None:
        from avatars import breaker, checks, monitoring  # noqa: F401  (registers the checks)

        breaker.breaker_changed.connect(monitoring.follow_breaker, dispatch_uid="follow-breaker")
