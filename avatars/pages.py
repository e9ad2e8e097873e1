"""The web page: one template whose script uses our own REST API (session cookie and CSRF).

No logic of the API is repeated here: the page only gets the addresses and the few numbers it
shows before asking (the cost of an avatar, the largest upload).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    """Upload a selfie, pick a style, generate, follow progress, see earlier avatars."""
    page_config = {
        "creditCost": settings.AVATAR_CREDIT_COST,
        "maxUploadBytes": settings.SELFIE_MAX_BYTES,
        "urls": {
            "credits": reverse("api-credits"),
            "sessions": reverse("api-sessions"),
            "styles": reverse("api-styles"),
            "status": reverse("api-status"),
            "avatars": reverse("api-avatars"),
            "login": reverse("login"),
        },
    }
    return render(
        request,
        "web/home.html",
        {"page_config": page_config, "credit_cost": settings.AVATAR_CREDIT_COST},
    )
