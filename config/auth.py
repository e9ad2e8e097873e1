"""Sign-in for API clients: DRF's token view, rate-limited per address, with axes' lockout."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError

from config.openapi import error_response
from config.sign_in import answer_locked_out
from config.throttling import CountingScopedRateThrottle


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")


class TokenView(ObtainAuthToken):
    throttle_classes = [CountingScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        responses={
            200: TokenOutput,
            429: error_response(
                "`locked_out`: too many failed sign-ins for this username or from this address;"
                " `throttled`: too many sign-ins from this address. `Retry-After` says how many"
                " seconds to wait."
            ),
        },
        summary="Exchange a username and password for an API token",
    )
    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # axes marks the request it refused; DRF would call that a wrong password.
            if getattr(request, "axes_locked_out", False):
                return answer_locked_out(request)
            raise
