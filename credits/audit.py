"""Read-only consistency checks of the ledger (`manage.py check_ledger`, the invariant checker)."""

from __future__ import annotations

from django.db.models import Count, Sum

from credits.models import CreditAccount, LedgerEntry


def find_ledger_problems() -> list[str]:
    """Every way the ledger disagrees with itself, as sentences; empty when all is well."""
    problems: list[str] = []
    accounts = CreditAccount.objects.annotate(total=Sum("entries__amount")).order_by("pk")
    for account in accounts.iterator(chunk_size=2000):
        total = account.total or 0
        if account.balance != total:
            problems.append(
                f"account {account.pk} (user {account.user_id}) has balance {account.balance} "
                f"but its entries sum to {total}"
            )
        if account.balance < 0:
            problems.append(f"account {account.pk} has a negative balance {account.balance}")

    repeated = (
        LedgerEntry.objects.filter(kind__in=[LedgerEntry.Kind.SPEND, LedgerEntry.Kind.REFUND])
        .values("kind", "reference")
        .annotate(times=Count("id"))
        .filter(times__gt=1)
        .order_by("reference")
    )
    for row in repeated:
        problems.append(f"reference {row['reference']} has {row['times']} {row['kind']} entries")

    spent = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND)
    refunds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND).order_by("pk")
    spent_by_reference = dict(
        spent.filter(reference__in=refunds.values("reference")).values_list("reference", "amount")
    )
    for refund in refunds:
        paid = -spent_by_reference.get(refund.reference, 0)
        if paid == 0:
            problems.append(f"refund {refund.pk} for {refund.reference} has no matching spend")
        elif refund.amount > paid:
            problems.append(
                f"refund {refund.pk} for {refund.reference} gives back {refund.amount} "
                f"but only {paid} was spent"
            )
    return problems
