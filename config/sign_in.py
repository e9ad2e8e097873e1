"""Guards on every door that takes a password: the page, the admin and the token endpoint.

Attempts are limited per address (the throttle of the `auth` scope, shared by all three), and
django-axes locks out an address, and separately a username, after repeated failures. The
client's address is the one DRF's throttles use, so `TRUSTED_PROXY_COUNT` rules both.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle

from config.api_errors import envelope, is_api_request
from config.throttling import CountingScopedRateThrottle

LOCKED_OUT_MESSAGE = "Too many failed sign-ins. Try again later."
THROTTLED_MESSAGE = "Too many sign-in attempts from this address. Try again later."


def client_address(request: HttpRequest) -> str | None:
    """The address throttles and lockouts count: REMOTE_ADDR, or the outermost trusted proxy's."""
    return BaseThrottle().get_ident(request)


class _SignInScope:
    throttle_scope = "auth"


def limit_sign_in_attempts(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Counts each POST to a sign-in page against the address's `THROTTLE_AUTH` rate."""

    @wraps(view)
    def limited(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            throttle = CountingScopedRateThrottle()
            if not throttle.allow_request(request, _SignInScope()):
                return _refuse(request, "throttled", THROTTLED_MESSAGE, throttle.wait())
        return view(request, *args, **kwargs)

    return limited


def answer_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """What axes answers to a locked-out sign-in (`AXES_LOCKOUT_CALLABLE`)."""
    return _refuse(
        request, "locked_out", LOCKED_OUT_MESSAGE, settings.AXES_COOLOFF_TIME.total_seconds()
    )


def _refuse(request: HttpRequest, code: str, message: str, retry_after: float) -> HttpResponse:
    if is_api_request(request):
        response = JsonResponse(envelope(code, message), status=429)
    else:
        minutes = max(1, round(retry_after / 60))
        context = {"message": message, "minutes": minutes}
        response = render(request, "registration/refused.html", context, status=429)
    response["Retry-After"] = str(max(1, round(retry_after)))
    return response
