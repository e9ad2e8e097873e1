"""Sign-in for API clients: DRF's token view, rate-limited per address against guessing."""

from __future__ import annotations

from rest_framework.authtoken.views import ObtainAuthToken

from config.throttling import CountingScopedRateThrottle


class TokenView(ObtainAuthToken):
    throttle_classes = [CountingScopedRateThrottle]
    throttle_scope = "auth"
