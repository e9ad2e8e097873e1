"""Replicate's webhook: checked, de-duplicated, recorded, and handed to the worker.

The view never downloads: it keeps the reported state on the prediction and wakes the avatar's
step, which applies it as it would a read. The request stays a few quick queries long.
"""

from __future__ import annotations

import json
import logging
import uuid

from django.db import IntegrityError, transaction
from django.http import JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from avatars import generation, replicate_client
from avatars.log_context import log_context
from avatars.models import WebhookDelivery
from config.api_errors import envelope
from config.openapi import error_response

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(envelope(code, message), status=status)


class _AlwaysJson(BaseContentNegotiation):
    """The answer is JSON whatever the sender's Accept header says: never refuse it a 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_SIGNATURE_HEADERS = [
    OpenApiParameter(name, str, OpenApiParameter.HEADER, required=True, description=description)
    for name, description in (
        ("webhook-id", "Standard Webhooks message id; a repeated id is a duplicate delivery."),
        ("webhook-timestamp", "Unix seconds; older than five minutes is refused."),
        ("webhook-signature", "`v1,<base64 HMAC-SHA256>` of `id.timestamp.body`."),
    )
]


class ReplicateWebhookView(APIView):
    """Replicate's webhook. Its signature is its authentication; the raw body is what is signed."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []  # the body is read raw, as it was signed
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJson

    @extend_schema(
        summary="Replicate's webhook: a prediction's state, signed (Standard Webhooks)",
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter(
                "avatar", OpenApiTypes.UUID, required=True, description="The avatar it is for"
            ),
            *_SIGNATURE_HEADERS,
        ],
        responses={
            200: inline_serializer(
                "WebhookOutcome",
                {"status": serializers.ChoiceField(choices=["ok", "duplicate", "ignored"])},
            ),
            400: error_response("`validation_error`: the body or the avatar id is not valid."),
            401: error_response("`invalid_signature`: unsigned, forged or too old."),
            503: error_response("`unavailable`: the signing secret can not be had right now."),
        },
        auth=[],
    )
    def post(self, request: Request) -> JsonResponse:
        headers = {
            name: request.headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        try:
            replicate_client.verify_webhook(
                headers=headers, body=request.body, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except replicate_client.InvalidWebhook as exc:
            logger.warning("webhook refused: %s", exc)
            return _error(401, "invalid_signature", "The webhook signature is not valid.")
        except replicate_client.ReplicateCallError as exc:
            logger.error("webhook: no signing secret available: %s", exc.detail)
            return _error(503, "unavailable", "The webhook can not be checked right now.")

        try:
            avatar_id = uuid.UUID(request.GET.get("avatar", ""))
            payload = json.loads(request.body)
            state = replicate_client.prediction_state_from_json(payload)
        except (ValueError, TypeError, AttributeError):
            return _error(400, "validation_error", "The webhook body or avatar id is not valid.")

        try:
            with transaction.atomic():
                WebhookDelivery.objects.create(webhook_id=headers["webhook-id"])
        except IntegrityError:
            return JsonResponse({"status": "duplicate"})

        try:
            with log_context(avatar_id=str(avatar_id), prediction_id=state.id):
                recorded = generation.hand_off_reported_state(avatar_id, state)
        except Exception:
            # Forget the delivery so Replicate's retry of it is processed.
            WebhookDelivery.objects.filter(webhook_id=headers["webhook-id"]).delete()
            raise
        return JsonResponse({"status": "ok" if recorded else "ignored"})
