from __future__ import annotations

from django.core.management.base import BaseCommand

from avatars.cleanup import run_cleanup


class Command(BaseCommand):
    help = "Delete expired selfies and avatar images, orphaned files and old idempotency keys."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be cleaned, change nothing"
        )

    def handle(self, *args, dry_run: bool, **options):
        counts = run_cleanup(dry_run=dry_run)
        verb = "would clean" if dry_run else "cleaned"
        for job, count in counts.items():
            self.stdout.write(f"{verb} {count} {job.replace('_', ' ')}")
