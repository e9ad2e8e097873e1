from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from credits import services
from credits.models import AppendOnlyError, Compensation, CreditAccount, LedgerEntry
from tests.concurrency import run_concurrently


def test_grant_creates_the_account_and_records_the_entry(alice):
    entry = services.grant_credits(user=alice, amount=5, memo="welcome")

    assert services.get_balance(user=alice) == 5
    assert (entry.kind, entry.amount, entry.balance_after, entry.memo) == ("grant", 5, 5, "welcome")


def test_spend_lowers_the_balance_and_names_what_it_paid_for(alice):
    services.grant_credits(user=alice, amount=3)

    entry = services.spend_credits(user=alice, amount=1, reference="avatar:1")

    assert services.get_balance(user=alice) == 2
    assert (entry.kind, entry.amount, entry.balance_after, entry.reference) == (
        "spend",
        -1,
        2,
        "avatar:1",
    )


def test_spend_beyond_the_balance_raises_and_changes_nothing(alice):
    services.grant_credits(user=alice, amount=1)

    with pytest.raises(services.InsufficientCredits):
        services.spend_credits(user=alice, amount=2, reference="avatar:1")

    assert services.get_balance(user=alice) == 1
    assert not LedgerEntry.objects.filter(kind="spend").exists()


def test_spend_without_an_account_is_insufficient(alice):
    with pytest.raises(services.InsufficientCredits):
        services.spend_credits(user=alice, amount=1, reference="avatar:1")
    assert services.get_balance(user=alice) == 0


def test_the_same_reference_is_charged_only_once(alice):
    services.grant_credits(user=alice, amount=5)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")

    with pytest.raises(services.AlreadyCharged):
        services.spend_credits(user=alice, amount=1, reference="avatar:1")

    assert services.get_balance(user=alice) == 4


def test_a_failed_spend_inside_an_outer_transaction_leaves_the_balance_alone(alice):
    services.grant_credits(user=alice, amount=5)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")

    with transaction.atomic():
        with pytest.raises(services.AlreadyCharged):
            services.spend_credits(user=alice, amount=1, reference="avatar:1")
        assert services.get_balance(user=alice) == 4


def test_database_refuses_a_negative_balance(alice):
    account = services.get_or_create_account(user=alice)

    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.filter(pk=account.pk).update(balance=-1)


def test_database_refuses_a_second_spend_for_one_reference(alice):
    services.grant_credits(user=alice, amount=5)
    entry = services.spend_credits(user=alice, amount=1, reference="avatar:1")

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            account=entry.account, kind="spend", amount=-1, balance_after=3, reference="avatar:1"
        )


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_spends_against_ten_credits_get_exactly_ten(django_user_model):
    user = django_user_model.objects.create_user(username="spender")
    services.grant_credits(user=user, amount=10)

    results = run_concurrently(
        lambda i: services.spend_credits(user=user, amount=1, reference=f"avatar:{i}"), 50
    )

    successes = [r for r in results if isinstance(r, LedgerEntry)]
    refusals = [r for r in results if isinstance(r, services.InsufficientCredits)]
    assert (len(successes), len(refusals)) == (10, 40), results
    assert services.get_balance(user=user) == 0
    assert sorted(e.balance_after for e in successes) == list(range(10))
    assert LedgerEntry.objects.filter(kind="spend").count() == 10


def test_compensate_refunds_what_was_spent(alice):
    services.grant_credits(user=alice, amount=3)
    services.spend_credits(user=alice, amount=2, reference="avatar:1")

    compensation = services.compensate(reference="avatar:1", reason="timeout")

    assert compensation.status == Compensation.Status.REFUNDED
    assert compensation.amount == 2
    assert compensation.ledger_entry.kind == "refund"
    assert compensation.ledger_entry.amount == 2
    assert services.get_balance(user=alice) == 3


def test_compensate_twice_refunds_once(alice):
    services.grant_credits(user=alice, amount=1)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")

    first = services.compensate(reference="avatar:1", reason="timeout")
    second = services.compensate(reference="avatar:1", reason="timeout")

    assert first.pk == second.pk
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert services.get_balance(user=alice) == 1


def test_compensate_without_a_spend_is_refused(alice):
    with pytest.raises(services.NothingToCompensate):
        services.compensate(reference="avatar:unknown", reason="timeout")
    assert not Compensation.objects.exists()


def test_pending_compensation_waits_for_a_decision(alice, django_user_model):
    staff = django_user_model.objects.create_user(username="reviewer", is_staff=True)
    services.grant_credits(user=alice, amount=1)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")

    pending = services.compensate(reference="avatar:1", reason="goodwill", approve=False)
    assert pending.status == "pending"
    assert services.get_balance(user=alice) == 0

    approved = services.approve_compensation(
        compensation_id=pending.pk, actor=staff, note="looked bad"
    )
    assert (approved.status, approved.decided_by, approved.note) == (
        "refunded",
        staff,
        "looked bad",
    )
    assert approved.decided_at is not None
    assert approved.ledger_entry.actor == staff
    assert services.get_balance(user=alice) == 1

    with pytest.raises(services.AlreadyDecided):
        services.approve_compensation(compensation_id=pending.pk, actor=staff)
    assert services.get_balance(user=alice) == 1


def test_rejected_compensation_never_refunds(alice):
    services.grant_credits(user=alice, amount=1)
    services.spend_credits(user=alice, amount=1, reference="avatar:1")
    pending = services.compensate(reference="avatar:1", reason="goodwill", approve=False)

    services.reject_compensation(compensation_id=pending.pk, note="no")
    again = services.compensate(reference="avatar:1", reason="goodwill")

    assert again.status == "rejected"
    assert not LedgerEntry.objects.filter(kind="refund").exists()
    assert services.get_balance(user=alice) == 0


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_compensations_make_one_refund(django_user_model):
    user = django_user_model.objects.create_user(username="unlucky")
    services.grant_credits(user=user, amount=1)
    services.spend_credits(user=user, amount=1, reference="avatar:1")

    results = run_concurrently(
        lambda i: services.compensate(reference="avatar:1", reason="timeout"), 20
    )

    assert all(isinstance(r, Compensation) for r in results), results
    assert {r.pk for r in results} == {Compensation.objects.get().pk}
    assert all(r.status == "refunded" for r in results)
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert services.get_balance(user=user) == 1


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_approving_at_once_refund_once(django_user_model):
    user = django_user_model.objects.create_user(username="disputer")
    services.grant_credits(user=user, amount=1)
    services.spend_credits(user=user, amount=1, reference="avatar:1")
    pending = services.compensate(reference="avatar:1", reason="goodwill", approve=False)

    results = run_concurrently(
        lambda i: services.approve_compensation(compensation_id=pending.pk), 2
    )

    assert sorted(type(r).__name__ for r in results) == ["AlreadyDecided", "Compensation"]
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert services.get_balance(user=user) == 1


class TestLedgerIsAppendOnly:
    @pytest.fixture
    def entry(self, alice):
        return services.grant_credits(user=alice, amount=1)

    def test_save_of_an_existing_entry_is_refused(self, entry):
        entry.amount = 100
        with pytest.raises(AppendOnlyError):
            entry.save()

    def test_delete_of_an_entry_is_refused(self, entry):
        with pytest.raises(AppendOnlyError):
            entry.delete()

    def test_queryset_update_and_delete_are_refused(self, entry):
        with pytest.raises(AppendOnlyError):
            LedgerEntry.objects.filter(pk=entry.pk).update(amount=100)
        with pytest.raises(AppendOnlyError):
            LedgerEntry.objects.all().delete()

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE credits_ledgerentry SET amount = 100 WHERE id = %s",
            "DELETE FROM credits_ledgerentry WHERE id = %s",
        ],
    )
    def test_the_database_refuses_raw_changes(self, entry, statement):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement, [entry.pk])
        assert LedgerEntry.objects.get(pk=entry.pk).amount == 1
