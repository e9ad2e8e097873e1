"""Workflows that move credits. Every write to a balance goes through here.

Balances change only by a guarded `UPDATE ... SET balance = balance +/- n` in the same
transaction as the ledger entry that explains it, so the two can never disagree and a
balance can never go below zero, however many requests race.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from credits.models import Compensation, CreditAccount, LedgerEntry


class InsufficientCredits(Exception):
    """The account holds fewer credits than the charge."""


class AlreadyCharged(Exception):
    """A spend with this reference exists already; nothing was charged again."""


class NothingToCompensate(Exception):
    """No spend exists for the reference, so there is nothing to give back."""


class AlreadyDecided(Exception):
    """The compensation was approved or rejected before; this decision changed nothing."""

    def __init__(self, compensation: Compensation):
        super().__init__(f"compensation {compensation.reference} is already {compensation.status}")
        self.compensation = compensation


logger = logging.getLogger(__name__)

SPEND_CONSTRAINT = "credits_entry_one_spend_or_refund_per_reference"


def get_or_create_account(*, user: AbstractBaseUser) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(user=user)
    return account


def get_balance(*, user: AbstractBaseUser) -> int:
    balance = CreditAccount.objects.filter(user=user).values_list("balance", flat=True).first()
    return balance or 0


def list_entries(*, user: AbstractBaseUser) -> QuerySet[LedgerEntry]:
    """The user's ledger, newest first."""
    return LedgerEntry.objects.filter(account__user=user).order_by("-created_at", "-id")


def _move_credits(
    *,
    account_id: int,
    amount: int,
    kind: str,
    reference: str = "",
    memo: str = "",
    actor: AbstractBaseUser | None = None,
) -> LedgerEntry:
    """Change a balance by `amount` and record why; the caller holds a transaction.

    The `balance >= -amount` guard makes a debit a no-op when it would overdraw; PostgreSQL
    re-checks it against the newest row version when concurrent updates queue on the row.
    """
    updated = CreditAccount.objects.filter(pk=account_id, balance__gte=max(0, -amount)).update(
        balance=F("balance") + amount, updated_at=timezone.now()
    )
    if not updated:
        raise InsufficientCredits(f"account {account_id} can not pay {-amount} credits")
    balance_after = CreditAccount.objects.values_list("balance", flat=True).get(pk=account_id)
    return LedgerEntry.objects.create(
        account_id=account_id,
        kind=kind,
        amount=amount,
        balance_after=balance_after,
        reference=reference,
        memo=memo,
        actor=actor,
    )


def grant_credits(
    *,
    user: AbstractBaseUser,
    amount: int,
    memo: str = "",
    actor: AbstractBaseUser | None = None,
) -> LedgerEntry:
    if amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    with transaction.atomic():
        account = get_or_create_account(user=user)
        return _move_credits(
            account_id=account.pk,
            amount=amount,
            kind=LedgerEntry.Kind.GRANT,
            memo=memo,
            actor=actor,
        )


def spend_credits(
    *, user: AbstractBaseUser, amount: int, reference: str, memo: str = ""
) -> LedgerEntry:
    """Charge `amount` for `reference`, once. Raises InsufficientCredits or AlreadyCharged."""
    if amount <= 0:
        raise ValueError("a spend must be a positive number of credits")
    if not reference:
        raise ValueError("a spend needs a reference")
    try:
        with transaction.atomic():
            account = get_or_create_account(user=user)
            return _move_credits(
                account_id=account.pk,
                amount=-amount,
                kind=LedgerEntry.Kind.SPEND,
                reference=reference,
                memo=memo,
            )
    except IntegrityError as exc:
        if SPEND_CONSTRAINT in str(exc):
            raise AlreadyCharged(reference) from exc
        raise


def compensate(
    *,
    reference: str,
    reason: str,
    source: str = Compensation.Source.AUTOMATIC,
    approve: bool = True,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> Compensation:
    """Open the one compensation for `reference` and, when `approve`, refund it.

    Safe to call any number of times from any number of processes: the unique reference
    makes one compensation, and the row lock in `_decide` one refund. An automatic one stays
    pending instead when the account is over CREDITS_AUTO_REFUND_DAILY_LIMIT.
    """
    spend = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND, reference=reference).first()
    if spend is None:
        raise NothingToCompensate(reference)
    try:
        with transaction.atomic():
            compensation = Compensation.objects.create(
                reference=reference,
                account_id=spend.account_id,
                amount=-spend.amount,
                reason=reason,
                source=source,
                note=note,
            )
    except IntegrityError:
        compensation = Compensation.objects.get(reference=reference)
    if approve and compensation.status == Compensation.Status.PENDING:
        try:
            compensation = _decide(
                compensation.pk,
                actor=actor,
                note=note,
                refund=True,
                within_daily_limit=source == Compensation.Source.AUTOMATIC,
            )
        except AlreadyDecided as decided:
            compensation = decided.compensation
    return compensation


def _over_daily_auto_refund_limit(account_id: int) -> bool:
    """Abuse guard: past the limit, automatic refunds wait for a person to review them."""
    since = timezone.now() - timedelta(hours=24)
    refunded = Compensation.objects.filter(
        account_id=account_id,
        source=Compensation.Source.AUTOMATIC,
        status=Compensation.Status.REFUNDED,
        decided_at__gte=since,
    ).count()
    return refunded >= settings.CREDITS_AUTO_REFUND_DAILY_LIMIT


def _decide(
    compensation_id: int,
    *,
    actor: AbstractBaseUser | None,
    note: str,
    refund: bool,
    within_daily_limit: bool = False,
) -> Compensation:
    with transaction.atomic():
        # Lock order is always compensation, then account, so two deciders of the same
        # compensation queue here instead of deadlocking.
        compensation = Compensation.objects.select_for_update().get(pk=compensation_id)
        if compensation.is_decided:
            raise AlreadyDecided(compensation)
        if within_daily_limit:
            # The account lock makes concurrent automatic refunds count one another.
            CreditAccount.objects.select_for_update().get(pk=compensation.account_id)
            if _over_daily_auto_refund_limit(compensation.account_id):
                logger.warning(
                    "compensation %s held for review: account %s is over the daily limit of "
                    "automatic refunds",
                    compensation.reference,
                    compensation.account_id,
                )
                return compensation
        if refund:
            compensation.ledger_entry = _move_credits(
                account_id=compensation.account_id,
                amount=compensation.amount,
                kind=LedgerEntry.Kind.REFUND,
                reference=compensation.reference,
                memo=f"refund: {compensation.reason}",
                actor=actor,
            )
            compensation.status = Compensation.Status.REFUNDED
        else:
            compensation.status = Compensation.Status.REJECTED
        compensation.decided_by = actor
        compensation.decided_at = timezone.now()
        if note:
            compensation.note = note
        compensation.save()
        return compensation


def approve_compensation(
    *, compensation_id: int, actor: AbstractBaseUser | None = None, note: str = ""
) -> Compensation:
    """Refund a pending compensation. Raises AlreadyDecided if someone decided first."""
    return _decide(compensation_id, actor=actor, note=note, refund=True)


def reject_compensation(
    *, compensation_id: int, actor: AbstractBaseUser | None = None, note: str = ""
) -> Compensation:
    """Close a pending compensation without a refund. Raises AlreadyDecided likewise."""
    return _decide(compensation_id, actor=actor, note=note, refund=False)
