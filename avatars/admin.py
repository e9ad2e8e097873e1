from __future__ import annotations

from django.contrib import admin

from avatars.models import Avatar, Prediction, SelfieSession


@admin.register(SelfieSession)
class SelfieSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "created_at", "expires_at", "selfie_deleted_at"]
    list_filter = ["created_at"]
    search_fields = ["id", "owner__username"]
    # The selfie itself is a face: staff see that it exists, not the picture.
    exclude = ["selfie"]
    readonly_fields = ["selfie_sha256", "selfie_width", "selfie_height", "created_at"]


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
    ]
    exclude = ["output_url", "input_file_id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "style", "status", "error_code", "attempts", "created_at"]
    list_filter = ["status", "error_code", "style", "created_at"]
    search_fields = ["id", "owner__username", "predictions__prediction_id"]
    list_select_related = ["owner"]
    inlines = [PredictionInline]
    readonly_fields = [f.name for f in Avatar._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False
