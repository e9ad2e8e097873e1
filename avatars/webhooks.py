"""Replicate's webhook: checked, de-duplicated, then applied like a poll result."""

from __future__ import annotations

import json
import logging
import uuid

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from avatars import generation, replicate_client
from avatars.log_context import log_context
from avatars.models import Avatar, WebhookDelivery

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


@csrf_exempt
@require_POST
def replicate_webhook(request: HttpRequest) -> JsonResponse:
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

    if not Avatar.objects.filter(pk=avatar_id).exists():
        return JsonResponse({"status": "ignored"})
    try:
        with log_context(avatar_id=str(avatar_id), prediction_id=state.id):
            outcome = generation.apply_prediction_state(avatar_id, state)
    except Exception:
        # Forget the delivery so Replicate's retry of it is processed.
        WebhookDelivery.objects.filter(webhook_id=headers["webhook-id"]).delete()
        raise
    if outcome is generation.Outcome.NEXT_ATTEMPT:
        generation.wake_generation(avatar_id)
    return JsonResponse({"status": "ok"})
