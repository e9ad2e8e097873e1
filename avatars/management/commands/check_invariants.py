from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from avatars.invariants import find_invariant_problems


class Command(BaseCommand):
    help = "Check the service's promises: every job ends, charged once, refunded at most once."

    def handle(self, *args, **options):
        problems = find_invariant_problems()
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"invariant check failed: {len(problems)} problem(s)")
        self.stdout.write("invariants ok")
