from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from avatars import erasure, errors, generation
from avatars.models import Alert, Avatar, Prediction, SelfieSession
from credits import services as credit_services
from credits.admin import CompensationAdmin, NoteForm, ReadOnlyAdmin, ask_then_apply
from credits.models import Compensation


class ErasureConfirmation(forms.Form):
    confirm = forms.BooleanField(
        label="The user asked for this; their selfies and avatar images can not be recovered."
    )


@admin.register(SelfieSession)
class SelfieSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "created_at", "expires_at", "selfie_deleted_at"]
    list_filter = ["created_at"]
    search_fields = ["id", "owner__username"]
    # The selfie itself is a face: staff see that it exists, not the picture.
    exclude = ["selfie"]
    readonly_fields = ["owner", "selfie_sha256", "selfie_width", "selfie_height", "created_at"]
    actions = ["erase_sessions"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Its avatars were paid for: a session leaves through erasure, which refunds what runs
        # and keeps the bare rows the ledger points at.
        return False

    @admin.action(
        description="Erase the selected sessions (cancels and refunds what runs, deletes files)…",
        permissions=["change"],
    )
    def erase_sessions(self, request: HttpRequest, queryset):
        def erase(session: SelfieSession, data: dict) -> None:
            result = erasure.erase_session(owner=session.owner, session_id=session.pk)
            self.message_user(
                request,
                f"Session {session.pk}: {result.generations_canceled} generation(s) canceled "
                f"and refunded, {result.files_deleted} file(s) deleted.",
            )

        return ask_then_apply(
            self,
            request,
            queryset.select_related("owner"),
            title="Erase selfie sessions",
            form_class=ErasureConfirmation,
            apply=erase,
        )


COST_FIELDS = [
    "model",
    "quality",
    "input_text_tokens",
    "input_image_tokens",
    "output_tokens",
    "cost_usd",
]


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    """What each prediction was asked and cost (README, "What each avatar costs")."""

    list_display = ["prediction_id", "avatar", "status", "predict_time", *COST_FIELDS]
    list_filter = ["model", "quality", "status", "completed_at"]
    search_fields = ["prediction_id", "avatar__id"]
    exclude = ["output_url", "input_file_id"]


class PredictionInline(admin.TabularInline):
    model = Prediction
    extra = 0
    can_delete = False
    readonly_fields = [
        "number",
        "prediction_id",
        "status",
        "error",
        "created_at",
        "completed_at",
        "predict_time",
        *COST_FIELDS,
    ]
    exclude = ["output_url", "input_file_id", "reported_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "style",
        "status",
        "error_code",
        "attempts",
        "model",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["status", "error_code", "style", "model", "created_at"]
    search_fields = ["id", "owner__username", "predictions__prediction_id"]
    list_select_related = ["owner"]
    inlines = [PredictionInline]
    readonly_fields = [f.name for f in Avatar._meta.fields]
    actions = ["cancel_running", "open_goodwill_compensation"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # an avatar's row is the other half of its ledger entries

    def has_goodwill_permission(self, request: HttpRequest) -> bool:
        """Opening a compensation is adding one: the credits app's own permission."""
        return request.user.has_perm("credits.add_compensation")

    # Both actions move credits: a view-only staff member sees neither.
    @admin.action(
        description="Cancel the selected running avatars (refunds them)", permissions=["change"]
    )
    def cancel_running(self, request: HttpRequest, queryset):
        canceled = 0
        for avatar in queryset.filter(status__in=generation.ACTIVE):
            canceled += generation.end_generation(
                avatar.pk,
                errors.CANCELED,
                f"canceled by staff user {request.user.pk}",
                status=Avatar.Status.CANCELED,
            )
        self.message_user(request, f"Canceled {canceled} avatar(s).")

    @admin.action(
        description="Open a goodwill compensation (pending review)…", permissions=["goodwill"]
    )
    def open_goodwill_compensation(self, request: HttpRequest, queryset):
        def open_one(avatar: Avatar, data: dict) -> None:
            if avatar.status != Avatar.Status.SUCCEEDED:
                self.message_user(
                    request,
                    f"{avatar.pk} did not succeed; failures are compensated already.",
                    messages.WARNING,
                )
                return
            compensation = credit_services.compensate(
                reference=avatar.credit_reference,
                reason="goodwill",
                source=Compensation.Source.STAFF,
                approve=False,
                actor=request.user,
                note=data["note"],
            )
            self.message_user(request, f"{avatar.pk}: compensation is {compensation.status}.")

        return ask_then_apply(
            self,
            request,
            queryset,
            title="Open a goodwill compensation",
            form_class=NoteForm,
            apply=open_one,
        )


admin.site.unregister(Compensation)


@admin.register(Compensation)
class AvatarCompensationAdmin(CompensationAdmin):
    """The review queue, searchable by avatar and prediction id too (credits knows neither)."""

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            avatar_ids = Prediction.objects.filter(prediction_id=term).values_list(
                "avatar_id", flat=True
            )
            references = [f"avatar:{avatar_id}" for avatar_id in avatar_ids]
            references.append(f"avatar:{term}")
            queryset |= self.get_queryset(request).filter(reference__in=references)
        return queryset, may_have_duplicates


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "rule",
        "severity",
        "message",
        "count",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
    ]
    list_filter = ["rule", "severity", ("resolved_at", admin.EmptyFieldListFilter)]
    ordering = ["resolved_at", "-last_seen_at"]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class UserWithErasureAdmin(UserAdmin):
    """Django's user admin, plus erasure of a user's photos and avatars on their request."""

    actions = [*UserAdmin.actions, "erase_personal_data"]

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("auth.change_user")

    @admin.action(
        description="Erase the selected users' selfies and avatars (on their request)…",
        permissions=["erase"],
    )
    def erase_personal_data(self, request: HttpRequest, queryset):
        def erase(user, data: dict) -> None:
            result = erasure.erase_user_data(user=user, actor=request.user)
            self.message_user(
                request,
                f"User {user.pk}: {result.sessions} session(s) erased, "
                f"{result.generations_canceled} generation(s) canceled and refunded, "
                f"{result.files_deleted} file(s) deleted.",
            )

        return ask_then_apply(
            self,
            request,
            queryset,
            title="Erase selfies and avatars",
            form_class=ErasureConfirmation,
            apply=erase,
        )
