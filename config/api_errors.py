"""The one error envelope of the API: {"error": {"code", "message", "fields"}}.

Codes are stable strings clients can branch on; messages are for people.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    """An error with a stable code, raised by views: ApiError(409, "code", "message").

    `retry_after` (seconds) becomes the Retry-After header (DRF's handler sends `wait`)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        fields: dict | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.fields = fields or {}
        self.wait = retry_after


def envelope(code: str, message: str, fields: dict | None = None) -> dict:
    """The body of every error response."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


class ErrorBody(serializers.Serializer):
    """What went wrong: a stable code, a message, and what is wrong with each field."""

    code = serializers.CharField(help_text="Stable: clients branch on it.")
    message = serializers.CharField(help_text="For people.")
    fields = serializers.DictField(
        help_text="What is wrong with each field (or header) sent; empty when nothing is."
    )


class ErrorEnvelope(serializers.Serializer):
    """Every error response of the API (documented by config/openapi.py)."""

    error = ErrorBody()


_CODES: list[tuple[type[exceptions.APIException], str, str | None]] = [
    (exceptions.NotAuthenticated, "not_authenticated", None),
    (exceptions.AuthenticationFailed, "not_authenticated", None),
    (exceptions.PermissionDenied, "permission_denied", None),
    (exceptions.NotFound, "not_found", "Not found."),
    (exceptions.MethodNotAllowed, "method_not_allowed", None),
    (exceptions.NotAcceptable, "not_acceptable", None),
    (exceptions.UnsupportedMediaType, "unsupported_media_type", None),
    (exceptions.Throttled, "throttled", None),
    (exceptions.ParseError, "parse_error", None),
]


def _flatten(detail) -> dict | list | str:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def handle_api_exception(exc, context) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None

    fields: dict = {}
    if isinstance(exc, ApiError):
        code, message, fields = exc.code, str(exc.detail), exc.fields
    elif isinstance(exc, exceptions.ValidationError):
        code, message = "validation_error", "Some of the data sent is not valid."
        detail = _flatten(exc.detail)
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    else:
        code, message = "error", str(exc.detail)
        for kind, kind_code, fixed_message in _CODES:
            if isinstance(exc, kind):
                code, message = kind_code, fixed_message or str(exc.detail)
                break
    response.data = envelope(code, message, fields)
    return response


# Django's own error pages, for what never reaches a DRF view (a URL no route matches, such as
# an id that is not a UUID, a body over the size limit, or an exception outside DRF): HTML for
# the site, the envelope for the API.
def is_api_request(request: HttpRequest) -> bool:
    """Whether an error page should be the JSON envelope rather than HTML."""
    return request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(envelope("bad_request", "The request can not be read."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(envelope("permission_denied", "Not allowed."), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(envelope("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(
            envelope("internal", "Something went wrong on our side. Please try again."), status=500
        )
    return defaults.server_error(request)
