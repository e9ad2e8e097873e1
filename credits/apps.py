from django.apps import AppConfig
from django.db.models.signals import post_migrate

REVIEWERS_GROUP = "Refund reviewers"


# What a reviewer needs: to decide, and to see what they decide about.
REVIEWER_PERMISSIONS = [
    "decide_compensation",
    "view_compensation",
    "view_creditaccount",
    "view_ledgerentry",
]


def ensure_reviewers_group(sender, **kwargs) -> None:
    """The group whose members may approve or reject compensations."""
    from django.contrib.auth.models import Group, Permission

    permissions = Permission.objects.filter(
        content_type__app_label="credits", codename__in=REVIEWER_PERMISSIONS
    )
    if not permissions:  # permissions are created by an earlier post_migrate handler
        return
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP)
    group.permissions.add(*permissions)


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"

    def ready(self) -> None:
        post_migrate.connect(ensure_reviewers_group, sender=self)
