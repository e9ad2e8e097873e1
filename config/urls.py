from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import ObtainAuthToken

from avatars import api as avatars_api
from avatars import webhooks
from config import health
from credits import api as credits_api

api_v1 = [
    path("auth/token/", ObtainAuthToken.as_view(), name="api-token"),
    path("credits/", credits_api.CreditsView.as_view(), name="api-credits"),
    path("sessions/", avatars_api.SessionCreateView.as_view(), name="api-sessions"),
    path(
        "sessions/<uuid:session_id>/",
        avatars_api.SessionDetailView.as_view(),
        name="api-session-detail",
    ),
    path("styles/", avatars_api.StyleListView.as_view(), name="api-styles"),
    path("avatars/", avatars_api.AvatarListCreateView.as_view(), name="api-avatars"),
    path("avatars/<uuid:avatar_id>/", avatars_api.AvatarDetailView.as_view(), name="api-avatar"),
    path(
        "avatars/<uuid:avatar_id>/cancel/",
        avatars_api.AvatarCancelView.as_view(),
        name="api-avatar-cancel",
    ),
    path(
        "avatars/<uuid:avatar_id>/image/",
        avatars_api.AvatarImageView.as_view(),
        name="api-avatar-image",
    ),
    path("webhooks/replicate/", webhooks.replicate_webhook, name="api-webhook-replicate"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", health.liveness, name="healthz"),
    path("readyz", health.readiness, name="readyz"),
    path("api/v1/", include(api_v1)),
]
