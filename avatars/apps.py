from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Avatars"

    def ready(self) -> None:
        from celery.signals import worker_ready

        from avatars import breaker, checks, generation, monitoring, tasks  # noqa: F401  (checks)

        breaker.breaker_changed.connect(monitoring.follow_breaker, dispatch_uid="follow-breaker")
        breaker.breaker_changed.connect(
            generation.wake_breaker_waiters, dispatch_uid="wake-breaker-waiters"
        )
        worker_ready.connect(
            tasks.check_model_schema_at_worker_start, dispatch_uid="check-model-schema-at-start"
        )
