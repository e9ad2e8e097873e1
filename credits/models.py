"""Credit accounts, the append-only ledger and compensations.

`credits` knows nothing about what a charge paid for: a `reference` string such as
`avatar:<uuid>` ties a spend, its refund and its compensation together.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class CreditAccount(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_account"
    )
    balance = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="credits_account_balance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"account of user {self.user_id}: {self.balance}"


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove a ledger entry."""


class LedgerEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("ledger entries can not be updated")

    def delete(self):
        raise AppendOnlyError("ledger entries can not be deleted")


class LedgerEntry(models.Model):
    """One movement of credits. Never updated or deleted (a trigger enforces it too)."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        SPEND = "spend", "Spend"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.IntegerField()
    balance_after = models.IntegerField()
    reference = models.CharField(max_length=100, blank=True, default="")
    memo = models.CharField(max_length=200, blank=True, default="")
    # PROTECT: a staff user who moved credits is deactivated, never deleted, so the record stays.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-created_at"], name="credits_entry_account_time"),
            models.Index(fields=["reference"], name="credits_entry_reference"),
            # Credits spent per hour or day (the staff dashboard), read from the index alone.
            models.Index(
                fields=["created_at", "amount"],
                condition=Q(kind="spend"),
                name="credits_entry_spend_time",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "reference"],
                condition=Q(kind__in=["spend", "refund"]),
                name="credits_entry_one_spend_or_refund_per_reference",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="credits_entry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="credits_entry_balance_after_not_negative"
            ),
            models.CheckConstraint(
                condition=(
                    (Q(kind="spend") & Q(amount__lt=0))
                    | (Q(kind__in=["grant", "purchase", "refund"]) & Q(amount__gt=0))
                    | Q(kind="adjustment")
                ),
                name="credits_entry_sign_matches_kind",
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=["spend", "refund"]) | ~Q(reference=""),
                name="credits_entry_spend_refund_have_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} ({self.reference or self.memo})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("ledger entries can not be updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("ledger entries can not be deleted")


class Compensation(models.Model):
    """A decision about giving credits back for one reference; at most one per reference."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        REFUNDED = "refunded", "Refunded"
        REJECTED = "rejected", "Rejected"

    class Source(models.TextChoices):
        AUTOMATIC = "automatic", "Automatic"
        STAFF = "staff", "Staff"

    reference = models.CharField(max_length=100, unique=True)
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="compensations"
    )
    amount = models.PositiveIntegerField()
    reason = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.AUTOMATIC)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")
    ledger_entry = models.OneToOneField(
        LedgerEntry,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="compensation",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("decide_compensation", "Can approve or reject compensations")]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="credits_comp_status_time"),
            models.Index(
                fields=["account", "source", "decided_at"], name="credits_comp_auto_refunds"
            ),
            models.Index(fields=["account", "-created_at"], name="credits_comp_account_time"),
            # Refunds per hour or day by reason (the staff dashboard), read from the index alone.
            models.Index(
                fields=["decided_at", "reason"],
                condition=Q(status="refunded"),
                name="credits_comp_refund_time",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="credits_compensation_amount_positive"
            ),
            models.CheckConstraint(
                condition=(
                    (Q(status="refunded") & Q(ledger_entry__isnull=False))
                    | (~Q(status="refunded") & Q(ledger_entry__isnull=True))
                ),
                name="credits_compensation_refunded_has_entry",
            ),
        ]

    def __str__(self) -> str:
        return f"compensation {self.reference} ({self.status})"

    @property
    def is_decided(self) -> bool:
        return self.status != self.Status.PENDING
