"""Staff's side of credits: read-only ledger, grants with a memo, and the compensation review queue.

Decisions go through `credits.services`, which refunds exactly once however many reviewers
press the button; the admin only collects the note and reports what happened.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Case, IntegerField, Sum, Value, When
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from credits import services
from credits.models import Compensation, CreditAccount, LedgerEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only services may write: staff can look, never edit."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


class GrantForm(forms.Form):
    amount = forms.IntegerField(min_value=1, max_value=10_000)
    memo = forms.CharField(max_length=200)


def ask_then_apply(modeladmin, request, queryset, *, title: str, form_class, apply):
    """An admin action with an intermediate page: show `form_class`, then `apply(obj, data)`.

    Returns the page while the form is not yet (validly) submitted, None once applied.
    """
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        for obj in queryset:
            apply(obj, form.cleaned_data)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "objects": queryset,
        "action": request.POST.get("action"),
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/ask_then_apply.html", context)


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "updated_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    actions = ["grant_credits"]

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("credits.change_creditaccount")

    @admin.action(description="Grant credits…", permissions=["grant"])
    def grant_credits(self, request: HttpRequest, queryset):
        def grant(account: CreditAccount, data: dict) -> None:
            entry = services.grant_credits(
                user=account.user, amount=data["amount"], memo=data["memo"], actor=request.user
            )
            self.message_user(
                request,
                f"Granted {data['amount']} to {account.user}; balance {entry.balance_after}.",
            )

        return ask_then_apply(
            self, request, queryset, title="Grant credits", form_class=GrantForm, apply=grant
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount", "balance_after", "reference", "memo"]
    list_filter = ["kind", "created_at"]
    search_fields = ["reference", "account__user__username", "memo"]
    list_select_related = ["account__user"]
    date_hierarchy = "created_at"


@admin.register(Compensation)
class CompensationAdmin(ReadOnlyAdmin):
    """The review queue: pending first, with the numbers a reviewer needs at the top."""

    list_display = [
        "created_at",
        "reference",
        "user",
        "amount",
        "reason",
        "status",
        "source",
        "decided_by",
        "decided_at",
    ]
    list_filter = ["status", "reason", "source", "created_at"]
    search_fields = ["reference", "account__user__username"]
    list_select_related = ["account__user", "decided_by"]
    readonly_fields = [f.name for f in Compensation._meta.fields]
    actions = ["approve_and_refund", "reject"]
    change_list_template = "admin/credits/compensation/change_list.html"

    @admin.display(ordering="account__user__username")
    def user(self, compensation: Compensation) -> str:
        return str(compensation.account.user)

    def get_ordering(self, request):
        pending_first = Case(
            When(status=Compensation.Status.PENDING, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return [pending_first.asc(), "-created_at"]

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("credits.decide_compensation")

    def _decide_each(self, request, queryset, *, title: str, decide, verb: str):
        def apply(compensation: Compensation, data: dict) -> None:
            try:
                decide(compensation_id=compensation.pk, actor=request.user, note=data["note"])
            except services.AlreadyDecided as already:
                earlier = already.compensation
                self.message_user(
                    request,
                    f"{earlier.reference} was already {earlier.status} by "
                    f"{earlier.decided_by or 'the system'}; nothing changed.",
                    messages.WARNING,
                )
            else:
                self.message_user(request, f"{compensation.reference} {verb}.")

        return ask_then_apply(
            self, request, queryset, title=title, form_class=NoteForm, apply=apply
        )

    @admin.action(description="Approve and refund…", permissions=["decide"])
    def approve_and_refund(self, request: HttpRequest, queryset):
        return self._decide_each(
            request,
            queryset,
            title="Approve and refund",
            decide=services.approve_compensation,
            verb="refunded",
        )

    @admin.action(description="Reject…", permissions=["decide"])
    def reject(self, request: HttpRequest, queryset):
        return self._decide_each(
            request, queryset, title="Reject", decide=services.reject_compensation, verb="rejected"
        )

    def changelist_view(self, request: HttpRequest, extra_context=None):
        return super().changelist_view(
            request, {**(extra_context or {}), "summary": compensation_summary()}
        )


def compensation_summary() -> dict:
    """Pending count, credits refunded today and in 7 days, and refunds by reason (7 days)."""
    now = timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    refunded = Compensation.objects.filter(status=Compensation.Status.REFUNDED)
    week = refunded.filter(decided_at__gte=now - timedelta(days=7))
    return {
        "pending": Compensation.objects.filter(status=Compensation.Status.PENDING).count(),
        "refunded_today": refunded.filter(decided_at__gte=today).aggregate(n=Sum("amount"))["n"]
        or 0,
        "refunded_7_days": week.aggregate(n=Sum("amount"))["n"] or 0,
        "by_reason": list(
            week.values("reason").annotate(credits=Sum("amount")).order_by("-credits", "reason")
        ),
    }
