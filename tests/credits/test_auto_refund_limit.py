"""The abuse guard: past a daily number of automatic refunds, refunds wait for a reviewer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from credits import services
from credits.models import Compensation


@pytest.fixture
def user(alice, settings):
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = 3
    services.grant_credits(user=alice, amount=20)
    return alice


def fail_one(user, n: int) -> Compensation:
    reference = f"avatar:{n}"
    services.spend_credits(user=user, amount=1, reference=reference)
    return services.compensate(reference=reference, reason="timeout")


def test_automatic_refunds_beyond_the_daily_limit_wait_for_review(user):
    start = timezone.now()
    with freeze_time(start):
        refunded = [fail_one(user, n).status for n in range(3)]
        held = fail_one(user, 3)

    assert refunded == ["refunded"] * 3
    assert held.status == "pending"
    assert held.ledger_entry is None
    assert services.get_balance(user=user) == 20 - 1


def test_the_limit_is_a_rolling_24_hours(user):
    start = timezone.now()
    with freeze_time(start):
        for n in range(3):
            fail_one(user, n)
    with freeze_time(start + timedelta(hours=23, minutes=59)):
        assert fail_one(user, 3).status == "pending"
    with freeze_time(start + timedelta(hours=24, minutes=1)):
        assert fail_one(user, 4).status == "refunded"


def test_the_limit_is_per_account(user, bob):
    services.grant_credits(user=bob, amount=1)
    for n in range(3):
        fail_one(user, n)

    services.spend_credits(user=bob, amount=1, reference="avatar:bob")
    assert services.compensate(reference="avatar:bob", reason="timeout").status == "refunded"


def test_staff_refunds_do_not_count_against_the_limit(user):
    for n in range(2):
        services.spend_credits(user=user, amount=1, reference=f"avatar:g{n}")
        pending = services.compensate(
            reference=f"avatar:g{n}", reason="goodwill", source="staff", approve=False
        )
        services.approve_compensation(compensation_id=pending.pk)

    assert [fail_one(user, n).status for n in range(3)] == ["refunded"] * 3


def test_a_held_refund_can_still_be_approved_by_a_reviewer(user, django_user_model):
    reviewer = django_user_model.objects.create_user(username="reviewer", is_staff=True)
    for n in range(3):
        fail_one(user, n)
    held = fail_one(user, 3)

    approved = services.approve_compensation(compensation_id=held.pk, actor=reviewer)

    assert (approved.status, approved.decided_by) == ("refunded", reviewer)
    assert services.get_balance(user=user) == 20


def test_a_goodwill_compensation_starts_pending(user):
    services.spend_credits(user=user, amount=1, reference="avatar:ok")

    goodwill = services.compensate(
        reference="avatar:ok", reason="goodwill", source="staff", approve=False
    )

    assert (goodwill.status, goodwill.source) == ("pending", "staff")
