"""HTTP API of the avatars app: one view per operation, small input and output serializers."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from avatars import services
from avatars.models import Avatar, SelfieSession
from avatars.selfies import InvalidSelfie, prepare_selfie_from_settings
from config.api_errors import ApiError


class AvatarOutput(serializers.ModelSerializer):
    class Meta:
        model = Avatar
        fields = ["id", "session", "style", "status", "attempts", "created_at", "completed_at"]


class SessionOutput(serializers.ModelSerializer):
    selfie_deleted = serializers.SerializerMethodField()
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
            "avatars",
        ]

    def get_selfie_deleted(self, session: SelfieSession) -> bool:
        return session.selfie_deleted_at is not None

    @extend_schema(responses=AvatarOutput(many=True))
    def get_avatars(self, session: SelfieSession) -> list[dict]:
        return AvatarOutput(session.avatars.order_by("-created_at"), many=True).data


class SessionUploadInput(serializers.Serializer):
    selfie = serializers.FileField(
        help_text="A JPEG, PNG or WebP photo, at least 256x256 pixels and at most 10 MB."
    )


class SessionCreateView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=SessionUploadInput, responses={201: SessionOutput})
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
        return Response(SessionOutput(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    @extend_schema(responses=SessionOutput)
    def get(self, request: Request, session_id) -> Response:
        session = get_object_or_404(SelfieSession, pk=session_id, owner=request.user)
        return Response(SessionOutput(session).data)
