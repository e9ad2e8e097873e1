from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from credits.services import grant_credits


class Command(BaseCommand):
    help = "Give credits to a user, creating their account if needed."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("amount", type=int)
        parser.add_argument("--memo", default="granted by an operator")

    def handle(self, *args, username: str, amount: int, memo: str, **options):
        if amount <= 0:
            raise CommandError("AMOUNT must be a positive number of credits")
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"no user named {username!r}") from exc
        entry = grant_credits(user=user, amount=amount, memo=memo)
        self.stdout.write(f"granted {amount} credits to {username}; balance {entry.balance_after}")
