"""The OpenAPI schema: drf-spectacular's, with every error response in the API's one envelope.

Errors a view can give because of how it is configured (authentication, parsers, an id in the
path, pagination, throttles) are added here, to each operation they apply to. Errors a view
raises itself are declared on the view, with `error_response(...)`.
"""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework.authentication import SessionAuthentication

from config.api_errors import ErrorEnvelope

_UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

BAD_BODY = (
    "`validation_error`: the body is not valid (`fields` says where); `parse_error`: it can not "
    "be read."
)
NOT_AUTHENTICATED = "`not_authenticated`: no token or session, or one that is not valid."
NO_CSRF_TOKEN = "`permission_denied`: signed in by the session cookie, without its CSRF token."
NO_SUCH_ID = "`not_found`: none of yours has this id."
NO_SUCH_PAGE = "`not_found`: there is no such page."
UNSUPPORTED_MEDIA_TYPE = "`unsupported_media_type`: the body is in a format not accepted here."
THROTTLED = "`throttled`: too many requests; `Retry-After` says how many seconds to wait."


def error_response(description: str) -> OpenApiResponse:
    """An error response of one operation: the envelope, and what its codes mean there."""
    return OpenApiResponse(ErrorEnvelope, description=description)


class AutoSchema(openapi.AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        for status, description in self._configured_errors():
            # What a view declares itself says more than these generic descriptions.
            if status not in responses:
                responses[status] = self._get_response_for_code(
                    error_response(description), status, direction=direction
                )
        return responses

    def _get_parameters(self) -> list[dict]:
        # Our optional query parameters read an empty value as no value: `?page=` is the first
        # page (DRF), `?session=` no filter. (Schema fuzzing holds every view to it.)
        return [
            {**parameter, "allowEmptyValue": True}
            if parameter["in"] == "query" and not parameter.get("required")
            else parameter
            for parameter in super()._get_parameters()
        ]

    def _get_pagination_parameters(self) -> list:
        # A view that pages a list inside its response object (the credits' ledger) takes
        # the page number too, not only a view that answers with the page itself.
        paginator = self._get_paginator()
        if self.method == "GET" and paginator and not self._is_list_view():
            return paginator.get_schema_operation_parameters(self.view)
        return super()._get_pagination_parameters()

    def _configured_errors(self) -> list[tuple[str, str]]:
        authenticators = self.view.get_authenticators()
        reads_body = (
            self.method in _UNSAFE_METHODS
            and self.get_request_serializer() is not None
            and bool(self.view.get_parsers())
        )
        errors = []
        if reads_body:
            errors.append(("400", BAD_BODY))
        if authenticators:
            errors.append(("401", NOT_AUTHENTICATED))
        if self.method in _UNSAFE_METHODS and any(
            isinstance(authenticator, SessionAuthentication) for authenticator in authenticators
        ):
            errors.append(("403", NO_CSRF_TOKEN))
        if "{" in self.path:
            errors.append(("404", NO_SUCH_ID))
        elif self.method == "GET" and self._get_paginator():
            errors.append(("404", NO_SUCH_PAGE))
        if reads_body:
            errors.append(("415", UNSUPPORTED_MEDIA_TYPE))
        if self.view.get_throttles():
            errors.append(("429", THROTTLED))
        return errors
