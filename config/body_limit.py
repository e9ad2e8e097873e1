"""Request bodies larger than any request of ours can need are refused before they are read.

The largest is a selfie upload (`SELFIE_MAX_BYTES` and the multipart framing around it).
Anything bigger would only fill a temporary file or memory before the view refused it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.api_errors import envelope

# Multipart boundaries, headers and the other form fields around the selfie.
MARGIN_BYTES = 64 * 1024


def max_body_bytes() -> int:
    return settings.SELFIE_MAX_BYTES + MARGIN_BYTES


class RefuseOversizedBodies:
    """413 with the API's envelope when the declared length is over the limit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0  # Django reads such a body as empty
        if declared > max_body_bytes():
            return JsonResponse(
                envelope(
                    "request_too_large",
                    f"The request body is larger than {max_body_bytes()} bytes.",
                ),
                status=413,
            )
        return self.get_response(request)
