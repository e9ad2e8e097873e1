"""The invariant checker, and the database trigger that keeps terminal states terminal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone
from freezegun import freeze_time

from avatars import errors, generation
from avatars.invariants import find_invariant_problems
from avatars.models import Avatar, AvatarTransition
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar


@pytest.fixture
def funded(alice, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 20
    credit_services.grant_credits(user=alice, amount=10)
    return alice


def test_a_consistent_service_passes(funded, capsys):
    make_avatar(funded, status="succeeded")
    failed = make_avatar(funded, status="running", attempts=1)
    generation.end_generation(failed.pk, errors.TIMEOUT, "test")
    make_avatar(funded)  # queued, its step due now

    assert find_invariant_problems() == []
    call_command("check_invariants")
    assert "invariants ok" in capsys.readouterr().out


def test_every_status_change_is_logged(funded):
    avatar = make_avatar(funded)
    Avatar.objects.filter(pk=avatar.pk).update(status="running")
    Avatar.objects.filter(pk=avatar.pk).update(status="succeeded")

    steps = list(avatar.transitions.order_by("at", "pk").values_list("from_status", "to_status"))
    assert steps == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "canceled"])
def test_the_database_refuses_to_change_a_terminal_status(funded, terminal):
    avatar = make_avatar(funded, status=terminal)

    with pytest.raises(IntegrityError, match="can not become"), transaction.atomic():
        Avatar.objects.filter(pk=avatar.pk).update(status="running")

    assert Avatar.objects.get(pk=avatar.pk).status == terminal


def test_other_fields_of_a_terminal_avatar_may_still_change(funded):
    avatar = make_avatar(funded, status="succeeded")

    Avatar.objects.filter(pk=avatar.pk).update(image="", idempotency_key="")

    assert AvatarTransition.objects.filter(avatar=avatar).count() == 1


def test_a_failed_avatar_without_a_refund_is_caught(funded):
    avatar = make_avatar(funded, status="failed")

    problems = find_invariant_problems()

    assert problems == [f"avatar:{avatar.pk} is failed without a compensation"]
    with pytest.raises(CommandError, match="1 problem"):
        call_command("check_invariants")


def test_a_succeeded_avatar_refunded_automatically_is_caught(funded):
    avatar = make_avatar(funded, status="succeeded")
    credit_services.compensate(reference=avatar.credit_reference, reason="timeout")

    assert find_invariant_problems() == [
        f"avatar:{avatar.pk} is succeeded but was refunded automatically"
    ]


def test_an_avatar_without_a_charge_is_caught(funded):
    charged = make_avatar(funded, status="succeeded")
    free = Avatar.objects.create(
        owner=funded, session=charged.session, style="comic", status="succeeded"
    )

    assert find_invariant_problems() == [f"avatar:{free.pk} was charged 0 times"]


def test_a_charge_whose_avatar_row_is_gone_is_caught(funded):
    kept = make_avatar(funded, status="succeeded")
    gone = make_avatar(funded, session=kept.session, status="running", attempts=1)
    Avatar.objects.filter(pk=gone.pk).delete()

    assert find_invariant_problems() == [f"avatar:{gone.pk} was charged but its avatar is gone"]


def test_an_unfinished_avatar_with_no_step_due_is_caught(funded):
    avatar = make_avatar(funded, status="running", attempts=1)
    Avatar.objects.filter(pk=avatar.pk).update(next_poll_at=None)

    assert find_invariant_problems() == [f"avatar {avatar.pk} is running with no step due"]


def test_an_avatar_long_past_its_deadline_is_caught(funded, settings):
    avatar = make_avatar(
        funded, status="running", attempts=1, deadline_at=timezone.now() + timedelta(seconds=5)
    )
    slack = generation.hard_deadline_margin().total_seconds() + settings.AVATAR_SWEEP_INTERVAL

    with freeze_time(avatar.deadline_at + timedelta(seconds=slack - 1)):
        assert find_invariant_problems() == []
    with freeze_time(avatar.deadline_at + timedelta(seconds=slack + 1)):
        assert find_invariant_problems() == [
            f"avatar {avatar.pk} is running long past its deadline"
        ]
