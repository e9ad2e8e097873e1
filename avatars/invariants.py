"""The promises the service makes, checked against the database (`manage.py check_invariants`).

Every avatar ends succeeded, or failed/canceled with its credit given back exactly once; nothing
is charged twice; balances add up; terminal states never change.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from avatars.generation import hard_deadline_margin
from avatars.models import Avatar, AvatarTransition
from credits.audit import find_ledger_problems
from credits.models import Compensation, LedgerEntry

TERMINAL = [status.value for status in Avatar.TERMINAL_STATUSES]


def _unfinished_problems(now) -> list[str]:
    """An unfinished avatar must have a step due, and not be past its deadline for long."""
    problems = []
    lease = hard_deadline_margin()
    sweep = timedelta(seconds=settings.AVATAR_SWEEP_INTERVAL)
    never_started = timedelta(seconds=settings.AVATAR_GENERATION_TIMEOUT)
    for avatar in Avatar.objects.exclude(status__in=TERMINAL).only(
        "pk", "status", "next_poll_at", "deadline_at", "created_at"
    ):
        if avatar.next_poll_at is None:
            problems.append(f"avatar {avatar.pk} is {avatar.status} with no step due")
        deadline = avatar.deadline_at or avatar.created_at + never_started
        if now > deadline + lease + sweep:
            problems.append(f"avatar {avatar.pk} is {avatar.status} long past its deadline")
    return problems


def _entries_per_reference(kind: str) -> dict[str, int]:
    entries = LedgerEntry.objects.filter(kind=kind, reference__startswith="avatar:")
    counted = entries.values("reference").annotate(n=Count("pk"))
    return dict(counted.values_list("reference", "n"))


def _money_problems() -> list[str]:
    problems = []
    spent = _entries_per_reference(LedgerEntry.Kind.SPEND)
    refunded = _entries_per_reference(LedgerEntry.Kind.REFUND)
    compensations = dict(
        Compensation.objects.filter(reference__startswith="avatar:").values_list(
            "reference", "source"
        )
    )
    known = set()
    for pk, status in Avatar.objects.values_list("pk", "status").iterator(chunk_size=5000):
        reference = f"avatar:{pk}"
        known.add(reference)
        if spent.get(reference, 0) != 1:
            problems.append(f"{reference} was charged {spent.get(reference, 0)} times")
        if refunded.get(reference, 0) > 1:
            problems.append(f"{reference} was refunded {refunded[reference]} times")
        if status in (Avatar.Status.FAILED, Avatar.Status.CANCELED):
            if reference not in compensations:
                problems.append(f"{reference} is {status} without a compensation")
        elif refunded.get(reference) and compensations.get(reference) != "staff":
            problems.append(f"{reference} is {status} but was refunded automatically")
    for reference in sorted(spent.keys() - known):
        problems.append(f"{reference} was charged but its avatar is gone")
    return problems


def _transition_problems() -> list[str]:
    """No avatar left a terminal state, and each reached one at most once."""
    problems = []
    left_terminal = AvatarTransition.objects.filter(from_status__in=TERMINAL)
    for avatar_id in left_terminal.values_list("avatar_id", flat=True).distinct():
        problems.append(f"avatar {avatar_id} changed after it ended")
    repeated = (
        AvatarTransition.objects.filter(to_status__in=TERMINAL)
        .values("avatar_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    for row in repeated:
        problems.append(f"avatar {row['avatar_id']} ended {row['n']} times")
    ended_without_log = (
        Avatar.objects.filter(status__in=TERMINAL)
        .annotate(ends=Count("transitions", filter=Q(transitions__to_status__in=TERMINAL)))
        .filter(ends=0)
    )
    for avatar_id in ended_without_log.values_list("pk", flat=True):
        problems.append(f"avatar {avatar_id} ended without a logged transition")
    return problems


def find_invariant_problems(now=None) -> list[str]:
    now = now or timezone.now()
    return (
        _unfinished_problems(now)
        + _money_problems()
        + _transition_problems()
        + find_ledger_problems()
    )
