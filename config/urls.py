from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from avatars import api as avatars_api
from avatars import dashboard_page, metrics, pages, webhooks
from config import auth, health
from config.sign_in import limit_sign_in_attempts
from credits import api as credits_api

api_v1 = [
    path("auth/token/", auth.TokenView.as_view(), name="api-token"),
    path("credits/", credits_api.CreditsView.as_view(), name="api-credits"),
    path("sessions/", avatars_api.SessionCreateView.as_view(), name="api-sessions"),
    path(
        "sessions/<uuid:session_id>/",
        avatars_api.SessionDetailView.as_view(),
        name="api-session-detail",
    ),
    path("account/data/", avatars_api.AccountDataView.as_view(), name="api-account-data"),
    path("styles/", avatars_api.StyleListView.as_view(), name="api-styles"),
    path("status/", avatars_api.StatusView.as_view(), name="api-status"),
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
    path(
        "avatar-images/<str:token>/",
        avatars_api.AvatarSignedImageView.as_view(),
        name="api-avatar-signed-image",
    ),
    path(
        "webhooks/replicate/",
        webhooks.ReplicateWebhookView.as_view(),
        name="api-webhook-replicate",
    ),
]

urlpatterns = [
    # The web page (it uses the API below with the session cookie) and its sign-in.
    path("", pages.home, name="home"),
    path(
        "accounts/login/",
        limit_sign_in_attempts(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", limit_sign_in_attempts(admin.site.login)),
    path(
        "admin/dashboard/",
        admin.site.admin_view(dashboard_page.dashboard_view),
        name="admin-dashboard",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", health.liveness, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("readyz", health.readiness, name="readyz"),
    path("api/v1/", include(api_v1)),
]

handler400 = "config.api_errors.bad_request"
handler403 = "config.api_errors.permission_denied"
handler404 = "config.api_errors.page_not_found"
handler500 = "config.api_errors.server_error"
