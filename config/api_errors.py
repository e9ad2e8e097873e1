"""The one error envelope of the API: {"error": {"code", "message", "fields"}}.

Codes are stable strings clients can branch on; messages are for people.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    """An error with a stable code, raised by views: ApiError(409, "code", "message")."""

    def __init__(self, status_code: int, code: str, message: str, fields: dict | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.fields = fields or {}


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
    response.data = {"error": {"code": code, "message": message, "fields": fields}}
    return response
