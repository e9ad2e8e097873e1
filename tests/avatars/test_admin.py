"""Staff in Django admin: the compensation review queue, grants, avatar actions, alerts.

That even a superuser can not edit or delete ledger entries: tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group
from django.test import Client

from avatars.models import Alert, Avatar, Prediction, SelfieSession
from credits import services as credit_services
from credits.apps import REVIEWERS_GROUP
from credits.models import Compensation, CreditAccount, LedgerEntry
from tests.avatars.test_recovery import make_avatar

COMPENSATIONS = "/admin/credits/compensation/"


@pytest.fixture
def reviewer(django_user_model):
    user = django_user_model.objects.create_user(
        username="reviewer", password="reviewer-password-1", is_staff=True
    )
    user.groups.add(Group.objects.get(name=REVIEWERS_GROUP))
    return user


@pytest.fixture
def plain_staff(django_user_model):
    user = django_user_model.objects.create_user(
        username="staff", password="staff-password-1", is_staff=True
    )
    # May look at compensations, but is not a reviewer.
    user.user_permissions.add(*_perms("view_compensation"))
    return user


def _perms(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="credits", codename__in=codenames)


def logged_in(user, password: str) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pending(alice) -> Compensation:
    credit_services.grant_credits(user=alice, amount=2)
    credit_services.spend_credits(user=alice, amount=2, reference="avatar:abc")
    return credit_services.compensate(
        reference="avatar:abc", reason="goodwill", source="staff", approve=False
    )


def run_action(client: Client, url: str, action: str, ids: list, **form) -> object:
    """Choose an action for the rows, then submit its intermediate form, like a person would."""
    first = client.post(url, {"action": action, ACTION_CHECKBOX_NAME: ids})
    assert first.status_code == 200, "the action asks for a note first"
    return client.post(
        url, {"action": action, ACTION_CHECKBOX_NAME: ids, "apply": "1", **form}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_reviewers_group_carries_the_decide_permission(db):
    group = Group.objects.get(name=REVIEWERS_GROUP)
    assert set(group.permissions.values_list("codename", flat=True)) == {
        "decide_compensation",
        "view_compensation",
        "view_creditaccount",
        "view_ledgerentry",
    }


def test_a_reviewer_approves_through_the_admin_and_the_balance_rises_by_the_amount(
    alice, reviewer, pending
):
    client = logged_in(reviewer, "reviewer-password-1")

    response = run_action(
        client, COMPENSATIONS, "approve_and_refund", [pending.pk], note="slow day, sorry"
    )

    assert response.status_code == 200
    assert "avatar:abc refunded." in messages_of(response)
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.note) == (
        "refunded",
        reviewer,
        "slow day, sorry",
    )
    assert pending.decided_at is not None
    assert credit_services.get_balance(user=alice) == 2


def test_a_note_is_required_to_decide(alice, reviewer, pending):
    client = logged_in(reviewer, "reviewer-password-1")

    response = client.post(
        COMPENSATIONS,
        {"action": "approve_and_refund", ACTION_CHECKBOX_NAME: [pending.pk], "apply": "1"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["note"]
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_a_reviewer_rejects_and_nothing_is_refunded(alice, reviewer, pending):
    client = logged_in(reviewer, "reviewer-password-1")

    run_action(client, COMPENSATIONS, "reject", [pending.pk], note="abuse")

    pending.refresh_from_db()
    assert (pending.status, pending.note) == ("rejected", "abuse")
    assert credit_services.get_balance(user=alice) == 0


def test_approving_twice_refunds_once_and_says_it_was_decided(alice, reviewer, pending):
    client = logged_in(reviewer, "reviewer-password-1")
    run_action(client, COMPENSATIONS, "approve_and_refund", [pending.pk], note="ok")

    again = run_action(client, COMPENSATIONS, "approve_and_refund", [pending.pk], note="ok")

    assert any("already refunded by reviewer" in m for m in messages_of(again))
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert credit_services.get_balance(user=alice) == 2


def test_staff_without_the_reviewers_group_can_not_decide(alice, plain_staff, pending):
    client = logged_in(plain_staff, "staff-password-1")

    page = client.get(COMPENSATIONS)
    client.post(
        COMPENSATIONS,
        {
            "action": "approve_and_refund",
            ACTION_CHECKBOX_NAME: [pending.pk],
            "apply": "1",
            "note": "x",
        },
    )

    assert page.status_code == 200
    assert b"approve_and_refund" not in page.content
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert credit_services.get_balance(user=alice) == 0


def test_the_queue_lists_pending_first_with_a_summary(alice, reviewer, pending):
    credit_services.grant_credits(user=alice, amount=1)
    credit_services.spend_credits(user=alice, amount=1, reference="avatar:failed")
    credit_services.compensate(reference="avatar:failed", reason="timeout")
    client = logged_in(reviewer, "reviewer-password-1")

    response = client.get(COMPENSATIONS)

    rows = list(response.context["cl"].result_list)
    assert [c.reference for c in rows] == ["avatar:abc", "avatar:failed"]
    summary = response.context["summary"]
    assert summary["pending"] == 1
    assert (summary["refunded_today"], summary["refunded_7_days"]) == (1, 1)
    assert summary["by_reason"] == [{"reason": "timeout", "credits": 1}]
    assert b"Pending review:" in response.content


def test_the_queue_is_searchable_by_prediction_id(funded_reviewer_setup):
    client, avatar, compensation = funded_reviewer_setup
    Prediction.objects.create(avatar=avatar, number=1, prediction_id="pred123abc")

    found = client.get(COMPENSATIONS, {"q": "pred123abc"})
    by_avatar = client.get(COMPENSATIONS, {"q": str(avatar.pk)})
    nothing = client.get(COMPENSATIONS, {"q": "nothing-like-it"})

    assert [c.pk for c in found.context["cl"].result_list] == [compensation.pk]
    assert [c.pk for c in by_avatar.context["cl"].result_list] == [compensation.pk]
    assert list(nothing.context["cl"].result_list) == []


@pytest.fixture
def funded_reviewer_setup(alice, reviewer):
    credit_services.grant_credits(user=alice, amount=3)
    avatar = make_avatar(alice, status="failed")
    compensation = credit_services.compensate(reference=avatar.credit_reference, reason="timeout")
    return logged_in(reviewer, "reviewer-password-1"), avatar, compensation


def test_a_superuser_grants_credits_with_a_memo(alice, admin_client, admin_user):
    account = credit_services.get_or_create_account(user=alice)

    run_action(
        admin_client,
        "/admin/credits/creditaccount/",
        "grant_credits",
        [account.pk],
        amount="4",
        memo="sorry for the outage",
    )

    entry = LedgerEntry.objects.get(kind="grant")
    assert (entry.amount, entry.memo, entry.actor) == (4, "sorry for the outage", admin_user)
    assert CreditAccount.objects.get(pk=account.pk).balance == 4


def test_staff_cancels_a_running_avatar_and_it_is_refunded(alice, admin_client):
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice, status="running", attempts=1)

    admin_client.post(
        "/admin/avatars/avatar/", {"action": "cancel_running", ACTION_CHECKBOX_NAME: [avatar.pk]}
    )

    avatar.refresh_from_db()
    assert (avatar.status, avatar.error_code) == ("canceled", "canceled")
    assert credit_services.get_balance(user=alice) == 1


def _staff_with(django_user_model, *permissions: str):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(
        username="viewer", password="viewer-password-1", is_staff=True
    )
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return logged_in(user, "viewer-password-1")


def _actions_offered(client: Client) -> set[str]:
    response = client.get("/admin/avatars/avatar/")
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def test_view_only_staff_can_neither_cancel_nor_compensate(alice, django_user_model):
    credit_services.grant_credits(user=alice, amount=2)
    running = make_avatar(alice, status="running", attempts=1)
    succeeded = make_avatar(alice, status="succeeded")
    viewer = _staff_with(django_user_model, "avatars.view_avatar")

    assert _actions_offered(viewer) == set()
    viewer.post(
        "/admin/avatars/avatar/", {"action": "cancel_running", ACTION_CHECKBOX_NAME: [running.pk]}
    )
    viewer.post(
        "/admin/avatars/avatar/",
        {
            "action": "open_goodwill_compensation",
            ACTION_CHECKBOX_NAME: [succeeded.pk],
            "apply": "1",
            "note": "sneaky",
        },
    )

    running.refresh_from_db()
    assert running.status == "running"
    assert not Compensation.objects.exists()
    assert credit_services.get_balance(user=alice) == 0


def test_cancelling_needs_change_avatar_and_compensating_needs_add_compensation(
    django_user_model,
):
    changer = _staff_with(django_user_model, "avatars.view_avatar", "avatars.change_avatar")
    assert _actions_offered(changer) == {"cancel_running"}
    django_user_model.objects.filter(username="viewer").delete()
    compensator = _staff_with(django_user_model, "avatars.view_avatar", "credits.add_compensation")
    assert _actions_offered(compensator) == {"open_goodwill_compensation"}


def test_staff_opens_a_goodwill_compensation_for_a_succeeded_avatar(alice, admin_client):
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice, status="succeeded")

    run_action(
        admin_client,
        "/admin/avatars/avatar/",
        "open_goodwill_compensation",
        [avatar.pk],
        note="face looked wrong",
    )

    compensation = Compensation.objects.get(reference=avatar.credit_reference)
    assert (compensation.status, compensation.reason, compensation.source) == (
        "pending",
        "goodwill",
        "staff",
    )
    assert credit_services.get_balance(user=alice) == 0


def test_avatar_admin_filters_and_alerts_page_render(alice, admin_client):
    credit_services.grant_credits(user=alice, amount=1)
    make_avatar(alice, status="failed", error_code="timeout")
    Alert.objects.create(rule="queued_too_long", severity="critical", message="3 queued")

    avatars = admin_client.get("/admin/avatars/avatar/", {"status": "failed", "style": "comic"})
    alerts = admin_client.get("/admin/avatars/alert/")

    assert len(avatars.context["cl"].result_list) == 1
    assert b"3 queued" in alerts.content
    assert Avatar.objects.count() == 1


def test_the_cost_of_each_avatar_and_prediction_shows_in_the_admin(alice, admin_client):
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice, status="succeeded")
    Avatar.objects.filter(pk=avatar.pk).update(cost_usd="0.178650")
    Prediction.objects.create(
        avatar=avatar,
        number=1,
        prediction_id="p-costly",
        status="succeeded",
        model="openai/gpt-image-1",
        quality="high",
        input_text_tokens=250,
        input_image_tokens=1000,
        output_tokens=4160,
        cost_usd="0.178650",
        output_url="https://replicate.delivery/abc/output.png",
    )

    listed = admin_client.get("/admin/avatars/avatar/", {"model": "openai/gpt-image-1"})
    change = admin_client.get(f"/admin/avatars/avatar/{avatar.pk}/change/")
    predictions = admin_client.get("/admin/avatars/prediction/", {"quality": "high"})

    assert b"0.178650" in listed.content and len(listed.context["cl"].result_list) == 1
    assert b"0.178650" in change.content and b"4160" in change.content
    assert b"p-costly" in predictions.content and b"0.178650" in predictions.content
    shown = admin_client.get(f"/admin/avatars/prediction/{Prediction.objects.get().pk}/change/")
    assert shown.status_code == 200 and b"replicate.delivery" not in shown.content


def test_staff_erase_a_users_selfies_and_avatars_on_request(alice, admin_client, settings):
    from django.core.files.storage import default_storage

    credit_services.grant_credits(user=alice, amount=2)
    running = make_avatar(alice, status="running", attempts=1)
    selfie = running.session.selfie.name

    run_action(admin_client, "/admin/auth/user/", "erase_personal_data", [alice.pk], confirm="on")

    running.refresh_from_db()
    assert (running.status, running.error_code) == ("canceled", "canceled")
    assert not default_storage.exists(selfie)
    assert running.session.__class__.objects.get(pk=running.session_id).selfie_deleted_at
    assert credit_services.get_balance(user=alice) == 2, "the running one was refunded"


SESSIONS = "/admin/avatars/selfiesession/"


def test_a_session_with_charged_avatars_can_not_be_deleted_nor_given_away(alice, admin_client):
    from django.db.models import ProtectedError

    credit_services.grant_credits(user=alice, amount=1)
    running = make_avatar(alice, status="running", attempts=1)
    session = running.session

    delete_page = admin_client.post(f"{SESSIONS}{session.pk}/delete/", {"post": "yes"})
    admin_client.post(
        SESSIONS, {"action": "delete_selected", ACTION_CHECKBOX_NAME: [session.pk], "post": "yes"}
    )
    change_page = admin_client.get(f"{SESSIONS}{session.pk}/change/")

    assert delete_page.status_code == 403
    assert "owner" not in change_page.context["adminform"].form.fields, "the owner is read-only"
    assert Avatar.objects.filter(pk=running.pk, status="running").exists()
    with pytest.raises(ProtectedError):
        session.delete()
    with pytest.raises(ProtectedError):
        SelfieSession.objects.filter(owner=alice).delete()


def test_staff_remove_a_session_by_erasing_it_and_its_running_avatar_is_refunded(
    alice, admin_client
):
    from django.core.files.storage import default_storage

    credit_services.grant_credits(user=alice, amount=1)
    running = make_avatar(alice, status="running", attempts=1)
    selfie = running.session.selfie.name

    run_action(admin_client, SESSIONS, "erase_sessions", [running.session_id], confirm="on")

    running.refresh_from_db()
    assert (running.status, running.error_code) == ("canceled", "canceled")
    assert not default_storage.exists(selfie)
    assert credit_services.get_balance(user=alice) == 1, "refunded"
    assert SelfieSession.objects.filter(pk=running.session_id).exists(), "the bare row is kept"
