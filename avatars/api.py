"""HTTP API of the avatars app: one view per operation, small input and output serializers."""

from __future__ import annotations

import math
import mimetypes
import uuid
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars import breaker, erasure, faces, image_urls, pacing, prompts, services, waits
from avatars.models import Avatar, SelfieSession
from avatars.selfies import InvalidSelfie, prepare_selfie_from_settings
from config.api_errors import ApiError
from config.openapi import error_response
from config.throttling import CountingScopedRateThrottle
from credits.models import Compensation
from credits.services import InsufficientCredits


class ErrorOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class RefundOutput(serializers.Serializer):
    status = serializers.CharField()
    amount = serializers.IntegerField()


class NoticeOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    until = serializers.DateTimeField()


class AvatarOutput(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    refund = serializers.SerializerMethodField()
    notice = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    eta_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Avatar
        fields = [
            "id",
            "session",
            "style",
            "status",
            "image_url",
            "width",
            "height",
            "error",
            "refund",
            "notice",
            "queue_position",
            "eta_seconds",
            "attempts",
            "created_at",
            "completed_at",
        ]

    def get_image_url(self, avatar: Avatar) -> str | None:
        """A short-lived signed URL, made only for the owner; never Replicate's, never public."""
        return image_urls.avatar_image_url(avatar, request=self.context.get("request"))

    @extend_schema_field(ErrorOutput(allow_null=True))
    def get_error(self, avatar: Avatar) -> dict | None:
        if not avatar.error_code:
            return None
        return {"code": avatar.error_code, "message": avatar.error_message}

    @extend_schema_field(RefundOutput(allow_null=True))
    def get_refund(self, avatar: Avatar) -> dict | None:
        compensations = self.context.get("compensations")
        if compensations is None:
            compensations = _compensations_for([avatar])
        compensation = compensations.get(avatar.credit_reference)
        if compensation is None:
            return None
        return {"status": compensation.status, "amount": compensation.amount}

    @extend_schema_field(NoticeOutput(allow_null=True))
    def get_notice(self, avatar: Avatar) -> dict | None:
        """Why an unfinished avatar is taking longer: Replicate is having an incident."""
        if avatar.is_terminal:
            return None
        breaker_open = self.context.get("breaker_open")
        if breaker_open is None:
            breaker_open = breaker.current_state().open
        return provider_notice(avatar) if breaker_open else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, min_value=1))
    def get_queue_position(self, avatar: Avatar) -> int | None:
        """Its place among avatars waiting for a create slot (1: next), or null."""
        if avatar.is_terminal:
            return None
        try:
            ahead = pacing.place_in_queue(str(avatar.pk))
        except redis.RedisError:
            return None
        return None if ahead is None else ahead + 1

    @extend_schema_field(serializers.IntegerField(allow_null=True, min_value=0))
    def get_eta_seconds(self, avatar: Avatar) -> int | None:
        """Seconds it probably still needs (our median over the last hour minus what it spent);
        null when finished or without data."""
        typical = self.context.get("typical_seconds", waits.MISSING)
        if typical is waits.MISSING:
            typical = waits.typical_seconds()
        return waits.eta_seconds(avatar, typical)


def provider_notice(avatar: Avatar) -> dict:
    until = avatar.deadline_at or avatar.created_at + timedelta(
        seconds=settings.AVATAR_GENERATION_TIMEOUT
    )
    return {
        "code": "provider_unavailable",
        "message": "The image service is having trouble; we keep trying until "
        f"{timezone.localtime(until):%H:%M}.",
        "until": until,
    }


def _compensations_for(avatars) -> dict[str, Compensation]:
    references = [avatar.credit_reference for avatar in avatars]
    return {c.reference: c for c in Compensation.objects.filter(reference__in=references)}


def _avatar_context(request: Request, avatars) -> dict:
    return {
        "request": request,
        "compensations": _compensations_for(avatars),
        "breaker_open": breaker.current_state().open,
        "typical_seconds": waits.typical_seconds(),
    }


class FaceCheckOutput(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[faces.NO_FACE, faces.SEVERAL_FACES, faces.FACE_TOO_SMALL]
    )
    message = serializers.CharField()


class SessionOutput(serializers.ModelSerializer):
    selfie_deleted = serializers.SerializerMethodField()
    face_check = serializers.SerializerMethodField()
    avatars = serializers.SerializerMethodField()

    class Meta:
        model = SelfieSession
        fields = [
            "id",
            "created_at",
            "expires_at",
            "selfie_deleted",
            "selfie_width",
            "selfie_height",
            "faces_found",
            "face_share",
            "face_check",
            "avatars",
        ]

    def get_selfie_deleted(self, session: SelfieSession) -> bool:
        return session.selfie_deleted_at is not None

    @extend_schema_field(FaceCheckOutput(allow_null=True))
    def get_face_check(self, session: SelfieSession) -> dict | None:
        """Null when the photo passed (or was not checked): submit it without `confirm`."""
        if not session.face_check_failed:
            return None
        return {"status": session.face_check, "message": faces.MESSAGES[session.face_check]}

    @extend_schema_field(AvatarOutput(many=True))
    def get_avatars(self, session: SelfieSession) -> list[dict]:
        avatars = list(session.avatars.order_by("-created_at"))
        request = self.context.get("request")
        return AvatarOutput(avatars, many=True, context=_avatar_context(request, avatars)).data


class SessionUploadInput(serializers.Serializer):
    selfie = serializers.FileField(
        help_text="A JPEG, PNG or WebP photo, at least 256x256 pixels and at most 10 MB."
    )


class SessionCreateView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [CountingScopedRateThrottle]
    throttle_scope = "uploads"

    @extend_schema(
        request=SessionUploadInput,
        responses={
            201: SessionOutput,
            400: error_response(
                "`invalid_selfie`: the file is not a photo we can use (`fields.reason` says "
                "why); `validation_error`: no file in the field 'selfie'."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("selfie")
        if upload is None:
            raise ApiError(
                400,
                "validation_error",
                "Attach a photo in the field 'selfie'.",
                fields={"selfie": ["This field is required."]},
            )
        try:
            # One byte past the limit is enough to refuse, without reading a huge upload.
            prepared = prepare_selfie_from_settings(upload.read(settings.SELFIE_MAX_BYTES + 1))
        except InvalidSelfie as exc:
            raise ApiError(
                400, "invalid_selfie", exc.message, fields={"reason": exc.reason}
            ) from exc
        session = services.create_selfie_session(owner=request.user, selfie=prepared)
        output = SessionOutput(session, context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    @extend_schema(responses=SessionOutput)
    def get(self, request: Request, session_id) -> Response:
        session = get_object_or_404(SelfieSession, pk=session_id, owner=request.user)
        return Response(SessionOutput(session, context={"request": request}).data)

    @extend_schema(
        request=None,
        responses={204: None},
        summary="Erase the selfie, the avatar images and the uploads of a session",
        description="Running generations are canceled and refunded first. Repeating it is "
        "harmless (204); the session and its avatars stay as records without images.",
    )
    def delete(self, request: Request, session_id) -> Response:
        try:
            erasure.erase_session(owner=request.user, session_id=session_id)
        except services.SessionNotFound as exc:
            raise ApiError(404, "not_found", "No such session.") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountDataView(APIView):
    @extend_schema(
        request=None,
        responses={204: None},
        summary="Erase the selfies, avatar images and uploads of all your sessions",
    )
    def delete(self, request: Request) -> Response:
        erasure.erase_user_data(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class StyleOutput(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()


class StyleListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=StyleOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(StyleOutput(prompts.STYLES.values(), many=True).data)


class StatusOutput(serializers.Serializer):
    typical_seconds = serializers.FloatField(
        allow_null=True, help_text="Median request-to-image time over the last hour."
    )
    queue_length = serializers.IntegerField(
        allow_null=True, help_text="Avatars waiting for a create slot."
    )
    provider = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])


class StatusView(APIView):
    """What to expect before paying: no sign-in needed."""

    permission_classes = [AllowAny]

    @extend_schema(responses=StatusOutput, summary="How long an avatar takes now")
    def get(self, request: Request) -> Response:
        return Response(
            {
                "typical_seconds": waits.typical_seconds(),
                "queue_length": waits.queue_length(),
                "provider": waits.provider_status(),
            }
        )


MAX_IDEMPOTENCY_KEY_LENGTH = 200


class AvatarCreateInput(serializers.Serializer):
    session = serializers.UUIDField()
    style = serializers.ChoiceField(choices=list(prompts.STYLES), default=prompts.DEFAULT_STYLE)
    confirm = serializers.BooleanField(
        default=False, help_text="Use a photo whose face check failed anyway."
    )


def _capacity_reached(resets_at: datetime) -> ApiError:
    wait = max(1, math.ceil((resets_at - timezone.now()).total_seconds()))
    return ApiError(
        503,
        "capacity_reached",
        "We have made as many avatars as we can today. Nothing was charged; please try again "
        f"after {resets_at:%H:%M} UTC.",
        retry_after=wait,
    )


class AvatarListCreateView(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]
    pagination_class = PageNumberPagination
    throttle_scope = "submissions"

    def get_throttles(self):
        # Only spending is rate-limited; listing is cheap and the page polls it.
        return [CountingScopedRateThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        request=AvatarCreateInput,
        responses={
            202: AvatarOutput,
            402: error_response("`insufficient_credits`: not enough credits for an avatar."),
            404: error_response("`not_found`: none of your sessions has this id."),
            409: error_response(
                "`face_check_failed`: the session's `face_check` warns about the photo; nothing "
                'was charged. Send `"confirm": true` to use it anyway.'
            ),
            410: error_response("`session_expired`: the selfie has expired; upload it again."),
            422: error_response(
                "`idempotency_conflict`: this Idempotency-Key was used for a different request."
            ),
            429: error_response(
                "`too_many_in_flight`: wait for one of your avatars to finish; `throttled`: too "
                "many submissions, retry after `Retry-After` seconds."
            ),
            503: error_response(
                "`capacity_reached`: the service's daily spending limit is reached; nothing was "
                "charged. `Retry-After` says when it resets (midnight UTC)."
            ),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
                OpenApiParameter.HEADER,
                description="Repeat a submission safely: same key and body, same avatar.",
            )
        ],
        summary="Spend a credit and start generating an avatar",
    )
    def post(self, request: Request) -> Response:
        data = AvatarCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(
                400,
                "validation_error",
                "The Idempotency-Key is too long.",
                fields={"Idempotency-Key": [f"At most {MAX_IDEMPOTENCY_KEY_LENGTH} characters."]},
            )
        try:
            avatar, created = services.request_avatar(
                owner=request.user,
                session_id=data.validated_data["session"],
                style=data.validated_data["style"],
                idempotency_key=key,
                confirm_face_check=data.validated_data["confirm"],
            )
        except services.SessionNotFound as exc:
            raise ApiError(404, "not_found", "No such session.") from exc
        except services.SessionExpired as exc:
            raise ApiError(
                410, "session_expired", "This selfie has expired. Please upload it again."
            ) from exc
        except services.FaceCheckFailed as exc:
            raise ApiError(
                409,
                "face_check_failed",
                f"{faces.MESSAGES[exc.args[0]]} Nothing was charged. Choose another photo, or "
                "confirm to use this one anyway.",
                fields={"confirm": ["Send true to use this photo anyway."]},
            ) from exc
        except services.TooManyInFlight as exc:
            raise ApiError(
                429,
                "too_many_in_flight",
                f"You can have at most {settings.AVATAR_MAX_IN_FLIGHT_PER_USER} avatars in "
                "progress. Wait for one to finish.",
            ) from exc
        except services.IdempotencyConflict as exc:
            raise ApiError(
                422,
                "idempotency_conflict",
                "This Idempotency-Key was already used for a different request.",
            ) from exc
        except InsufficientCredits as exc:
            raise ApiError(
                402, "insufficient_credits", "You do not have enough credits for an avatar."
            ) from exc
        except services.CapacityReached as exc:
            raise _capacity_reached(exc.resets_at) from exc
        response = Response(
            AvatarOutput(avatar, context=_avatar_context(request, [avatar])).data,
            status=status.HTTP_202_ACCEPTED,
        )
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(
        responses={
            200: AvatarOutput(many=True),
            400: error_response("`validation_error`: the session filter is not a valid id."),
        },
        parameters=[
            OpenApiParameter(
                "session", OpenApiTypes.UUID, description="Only this session's avatars"
            )
        ],
    )
    def get(self, request: Request) -> Response:
        avatars = Avatar.objects.filter(owner=request.user).order_by("-created_at", "-id")
        session_id = request.query_params.get("session")
        if session_id:
            try:
                avatars = avatars.filter(session_id=uuid.UUID(session_id))
            except ValueError as exc:
                raise ApiError(
                    400,
                    "validation_error",
                    "The session filter is not a valid id.",
                    fields={"session": ["Must be a UUID."]},
                ) from exc
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(avatars, request, self)
        output = AvatarOutput(page, many=True, context=_avatar_context(request, page))
        return paginator.get_paginated_response(output.data)


class AvatarDetailView(APIView):
    @extend_schema(responses=AvatarOutput)
    def get(self, request: Request, avatar_id) -> Response:
        avatar = get_object_or_404(Avatar, pk=avatar_id, owner=request.user)
        return Response(AvatarOutput(avatar, context=_avatar_context(request, [avatar])).data)


class AvatarCancelView(APIView):
    @extend_schema(
        request=None,
        responses={
            202: AvatarOutput,
            409: error_response("`avatar_finished`: this avatar has already finished."),
        },
    )
    def post(self, request: Request, avatar_id) -> Response:
        get_object_or_404(Avatar, pk=avatar_id, owner=request.user)
        try:
            avatar = services.cancel_avatar(owner=request.user, avatar_id=avatar_id)
        except services.AvatarFinished as exc:
            raise ApiError(409, "avatar_finished", "This avatar has already finished.") from exc
        return Response(
            AvatarOutput(avatar, context=_avatar_context(request, [avatar])).data,
            status=status.HTTP_202_ACCEPTED,
        )


class _PrivateImageView(APIView):
    """An avatar image: kept out of shared caches, and never content-sniffed into a page."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response.setdefault("Cache-Control", "private, no-store")
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def image_response(self, avatar: Avatar | None) -> FileResponse:
        if avatar is None or not avatar.image:
            raise ApiError(404, "not_found", "Not found.")
        try:
            image = avatar.image.open("rb")
        except FileNotFoundError as exc:  # erased a moment ago
            raise ApiError(404, "not_found", "Not found.") from exc
        content_type = mimetypes.guess_type(avatar.image.name)[0] or "application/octet-stream"
        response = FileResponse(image, content_type=content_type)
        response["Cache-Control"] = f"private, max-age={settings.AVATAR_IMAGE_URL_MAX_AGE}"
        return response


class AvatarImageView(_PrivateImageView):
    """The finished image to its owner, for clients that send their token anyway."""

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, avatar_id) -> FileResponse:
        avatar = Avatar.objects.filter(
            pk=avatar_id, owner=request.user, status=Avatar.Status.SUCCEEDED
        ).first()
        return self.image_response(avatar)


class AvatarSignedImageView(_PrivateImageView):
    """The finished image by the signed URL in `image_url`: no auth header, so `<img>` works.

    The signature names the avatar and its owner and expires after AVATAR_IMAGE_URL_MAX_AGE.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            (200, "image/png"): bytes,
            403: error_response("`link_expired`: read the avatar again for a new link."),
            404: error_response("`not_found`: not a link we made, or the image is gone."),
        },
        auth=[],
    )
    def get(self, request: Request, token: str) -> FileResponse:
        try:
            avatar_id, owner_id = image_urls.read_image_token(token)
        except image_urls.ExpiredImageLink as exc:
            raise ApiError(
                403, "link_expired", "This image link has expired. Read the avatar again."
            ) from exc
        except image_urls.InvalidImageLink as exc:
            raise ApiError(404, "not_found", "Not found.") from exc
        avatar = Avatar.objects.filter(
            pk=avatar_id, owner_id=owner_id, status=Avatar.Status.SUCCEEDED
        ).first()
        return self.image_response(avatar)
