from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Avatars"

    def ready(self) -> None:
        from avatars import checks  # noqa: F401  (registers the checks)
