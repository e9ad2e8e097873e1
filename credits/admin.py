from __future__ import annotations

from django.contrib import admin

from credits.models import Compensation, CreditAccount, LedgerEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only services may write: staff can look, never edit."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "updated_at"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount", "balance_after", "reference", "memo"]
    list_filter = ["kind", "created_at"]
    search_fields = ["reference", "account__user__username", "memo"]
    list_select_related = ["account__user"]
    date_hierarchy = "created_at"


@admin.register(Compensation)
class CompensationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "reference", "account", "amount", "reason", "status", "source"]
    list_filter = ["status", "reason", "source", "created_at"]
    search_fields = ["reference", "account__user__username"]
    list_select_related = ["account__user"]
