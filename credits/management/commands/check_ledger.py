from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from credits.audit import find_ledger_problems


class Command(BaseCommand):
    help = (
        "Check that every balance equals its entries and no reference is charged or refunded twice."
    )

    def handle(self, *args, **options):
        problems = find_ledger_problems()
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"ledger check failed: {len(problems)} problem(s)")
        self.stdout.write("ledger ok")
