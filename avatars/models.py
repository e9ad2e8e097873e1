"""Selfie sessions, avatars (one generation job each) and the Replicate predictions behind them."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def selfie_upload_to(instance: SelfieSession, filename: str) -> str:
    """An unguessable name that says nothing of the user's own file name."""
    return f"selfies/{secrets.token_hex(16)}.jpg"


def avatar_upload_to(instance: Avatar | None, filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"avatars/{secrets.token_hex(16)}.{extension}"


def current_model() -> str:
    return settings.REPLICATE_MODEL


def current_quality() -> str:
    return settings.AVATAR_IMAGE_QUALITY


def default_selfie_expiry():
    return timezone.now() + timedelta(hours=settings.SELFIE_RETENTION_HOURS)


class SelfieSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="selfie_sessions"
    )
    selfie = models.ImageField(upload_to=selfie_upload_to, blank=True)
    selfie_sha256 = models.CharField(max_length=64)
    selfie_width = models.PositiveIntegerField()
    selfie_height = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=default_selfie_expiry)
    selfie_deleted_at = models.DateTimeField(null=True, blank=True)
    # The face check at upload (avatars/faces.py): its verdict ("" when it did not run), the
    # faces found and the largest one's width as a share of the shorter side.
    face_check = models.CharField(max_length=20, blank=True, default="")
    faces_found = models.PositiveSmallIntegerField(null=True, blank=True)
    face_share = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="avatars_session_owner_time"),
            models.Index(
                fields=["expires_at"],
                condition=Q(selfie_deleted_at__isnull=True),
                name="avatars_session_selfie_expiry",
            ),
        ]

    def __str__(self) -> str:
        return f"session {self.id}"

    @property
    def face_check_failed(self) -> bool:
        """Whether a submission must be confirmed: the check ran and did not pass (faces.OK)."""
        return self.face_check not in ("", "ok")

    def is_expired(self, now=None) -> bool:
        """True once the selfie is gone or past its retention: no new avatar may use it."""
        now = now or timezone.now()
        return self.selfie_deleted_at is not None or self.expires_at <= now


class Avatar(models.Model):
    """One generation job and its result."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Never removed with what they point at: an avatar row is the other half of its ledger
    # entries (sessions and users leave through erasure, which keeps the bare rows).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="avatars"
    )
    session = models.ForeignKey(SelfieSession, on_delete=models.PROTECT, related_name="avatars")
    style = models.CharField(max_length=40)
    prompt_version = models.CharField(max_length=40)
    # The Replicate model (REPLICATE_MODEL when it was submitted) and quality every attempt uses.
    model = models.CharField(max_length=80, default=current_model)
    quality = models.CharField(max_length=16, default=current_quality)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Fencing counter: a poll message carries the value it was scheduled with and does
    # nothing unless it still matches, so a stale or duplicated message can not act twice.
    poll_seq = models.PositiveIntegerField(default=0)
    # When the next step is due; the sweeper re-drives rows whose step is overdue.
    next_poll_at = models.DateTimeField(null=True, blank=True)
    # Transient failures in a row of the current Replicate call (reset by a success).
    api_retries = models.PositiveSmallIntegerField(default=0)
    # Set just before a create is sent for the current attempt and cleared once its prediction
    # is stored: if a step finds it set, the create's outcome is unknown and must be looked up.
    create_sent_at = models.DateTimeField(null=True, blank=True)
    # Held by the step creating this attempt's prediction: no other step creates meanwhile.
    create_fenced_until = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    image = models.ImageField(upload_to=avatar_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_message = models.CharField(max_length=300, blank=True, default="")
    error_detail = models.TextField(blank=True, default="")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # What its predictions cost in USD, summed as each one ends (avatars/costs.py).
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="avatars_avatar_owner_time"),
            models.Index(fields=["status", "next_poll_at"], name="avatars_avatar_status_poll"),
            # For monitoring: what ended, and how, in the last minutes.
            models.Index(fields=["completed_at", "status"], name="avatars_avatar_completed"),
            # For the cleanup jobs: only rows that still hold something to clean are indexed.
            models.Index(
                fields=["completed_at"],
                condition=~Q(image=""),
                name="avatars_avatar_image_age",
            ),
            models.Index(
                fields=["created_at"],
                condition=~Q(idempotency_key=""),
                name="avatars_avatar_idem_key_age",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="avatars_avatar_one_per_idempotency_key",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed", "canceled"]),
                name="avatars_avatar_status_known",
            ),
        ]

    def __str__(self) -> str:
        return f"avatar {self.id} ({self.status})"

    @property
    def credit_reference(self) -> str:
        """What the ledger calls this avatar's charge, refund and compensation."""
        return f"avatar:{self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


class Prediction(models.Model):
    """One Replicate prediction: one attempt at generating an avatar."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="predictions")
    number = models.PositiveSmallIntegerField()
    prediction_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, default="starting")
    error = models.TextField(blank=True, default="")
    output_url = models.URLField(max_length=1000, blank=True, default="")
    # A selfie uploaded through Replicate's Files API for this attempt, deleted when it ends.
    input_file_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    predict_time = models.FloatField(null=True, blank=True)
    # When a webhook reported the state above: the worker applies it without reading again.
    reported_at = models.DateTimeField(null=True, blank=True)
    # What was asked and what it cost, recorded when it ends (avatars/costs.py). The tokens are
    # those gpt-image-1's logs report (null when they do not); cost is null until it ends.
    model = models.CharField(max_length=80, default=current_model)
    quality = models.CharField(max_length=16, default=current_quality)
    number_of_images = models.PositiveSmallIntegerField(default=1)
    input_text_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_image_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["avatar", "number"], name="avatars_prediction_one_per_attempt"
            ),
        ]
        indexes = [
            # Only the uploads still at Replicate: what `cleanup.forget_leftover_uploads` reads.
            models.Index(
                fields=["input_file_id"],
                condition=~models.Q(input_file_id=""),
                name="avatars_prediction_upload_left",
            ),
        ]

    def __str__(self) -> str:
        return f"prediction {self.prediction_id} ({self.status})"


class AvatarTransition(models.Model):
    """Every status an avatar took, written by a database trigger (see migration 0003).

    The same trigger refuses any change of a terminal status, so "terminal states never change"
    holds whatever code (or SQL) runs; this table is the evidence the invariant checker reads.
    """

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=16, null=True, blank=True)  # noqa: DJ001
    to_status = models.CharField(max_length=16)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["avatar", "at"], name="avatars_transition_avatar")]

    def __str__(self) -> str:
        return f"{self.avatar_id}: {self.from_status} -> {self.to_status}"


class WebhookDelivery(models.Model):
    """A webhook we accepted, by its `webhook-id`, so a replay is recognised and ignored."""

    webhook_id = models.CharField(max_length=200, unique=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.webhook_id


class Alert(models.Model):
    """A monitoring rule that fired: one open row per rule, resolved when the condition clears."""

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    rule = models.CharField(max_length=60)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    message = models.TextField()
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    count = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule"],
                condition=Q(resolved_at__isnull=True),
                name="avatars_alert_one_open_per_rule",
            ),
        ]
        indexes = [models.Index(fields=["-last_seen_at"], name="avatars_alert_recent")]

    def __str__(self) -> str:
        state = "resolved" if self.resolved_at else "open"
        return f"{self.rule} ({state})"


class DashboardRollup(models.Model):
    """The staff dashboard's figures for one hour or day that is over (avatars/dashboard.py).

    Written once, never changed: everything the dashboard counts is stamped with the moment it
    happened (completion, spend, refund decision), so nothing lands in a period that has ended.
    """

    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    period = models.CharField(max_length=8, choices=Period.choices)
    start = models.DateTimeField()
    figures = models.JSONField()
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "start"], name="avatars_rollup_one_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} from {self.start:%Y-%m-%d %H:%M}"
