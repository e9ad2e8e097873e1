"""Scheduled cleanup: each rule, its dry run, and that a second run does nothing more."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone
from freezegun import freeze_time

from avatars import cleanup
from avatars.models import Avatar, SelfieSession, WebhookDelivery
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar


@pytest.fixture
def funded(alice, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 50
    credit_services.grant_credits(user=alice, amount=20)
    return alice


def test_a_25_hour_old_selfie_is_deleted_and_a_23_hour_old_one_kept(funded):
    now = timezone.now()
    with freeze_time(now - timedelta(hours=25)):
        old = make_avatar(funded).session
    with freeze_time(now - timedelta(hours=23)):
        recent = make_avatar(funded).session
    old_name = old.selfie.name

    with freeze_time(now):
        assert cleanup.delete_expired_selfies(dry_run=True) == 1
        assert default_storage.exists(old_name), "a dry run changes nothing"
        assert cleanup.delete_expired_selfies() == 1
        assert cleanup.delete_expired_selfies() == 0, "idempotent"

    old.refresh_from_db()
    recent.refresh_from_db()
    assert not default_storage.exists(old_name)
    assert (old.selfie.name, old.selfie_deleted_at) == ("", now)
    assert recent.selfie and default_storage.exists(recent.selfie.name)
    assert recent.selfie_deleted_at is None


def test_expired_selfies_are_cleaned_in_batches(funded):
    with freeze_time(timezone.now() - timedelta(days=2)):
        for _ in range(5):
            make_avatar(funded)

    assert cleanup.delete_expired_selfies(batch_size=2) == 5
    assert not SelfieSession.objects.filter(selfie_deleted_at__isnull=True).exists()


def _with_image(avatar: Avatar, *, completed_days_ago: float) -> Avatar:
    name = default_storage.save(f"avatars/{avatar.pk.hex}.png", ContentFile(b"png"))
    Avatar.objects.filter(pk=avatar.pk).update(
        image=name,
        status="succeeded",
        completed_at=timezone.now() - timedelta(days=completed_days_ago),
    )
    avatar.refresh_from_db()
    return avatar


def test_avatar_images_past_retention_are_deleted_and_rows_kept(funded, settings):
    settings.AVATAR_RETENTION_DAYS = 30
    old = _with_image(make_avatar(funded), completed_days_ago=31)
    recent = _with_image(make_avatar(funded), completed_days_ago=29)
    old_name = old.image.name

    assert cleanup.delete_expired_avatar_images(dry_run=True) == 1
    assert default_storage.exists(old_name)
    assert cleanup.delete_expired_avatar_images() == 1
    assert cleanup.delete_expired_avatar_images() == 0

    assert not default_storage.exists(old_name)
    assert Avatar.objects.get(pk=old.pk).image.name == ""
    assert default_storage.exists(recent.image.name)


def test_without_a_retention_setting_avatar_images_are_kept(funded, settings):
    settings.AVATAR_RETENTION_DAYS = None
    old = _with_image(make_avatar(funded), completed_days_ago=3650)

    assert cleanup.delete_expired_avatar_images() == 0
    assert default_storage.exists(old.image.name)


def test_idempotency_keys_are_forgotten_after_24_hours(funded):
    old = make_avatar(funded, idempotency_key="k-old", idempotency_fingerprint="f")
    fresh = make_avatar(funded, idempotency_key="k-new", idempotency_fingerprint="f")
    Avatar.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))

    assert cleanup.forget_old_idempotency_keys(dry_run=True) == 1
    assert cleanup.forget_old_idempotency_keys() == 1

    assert Avatar.objects.get(pk=old.pk).idempotency_key == ""
    assert Avatar.objects.get(pk=fresh.pk).idempotency_key == "k-new"


def test_old_webhook_delivery_ids_are_forgotten(db):
    WebhookDelivery.objects.create(webhook_id="old", received_at=timezone.now() - timedelta(days=3))
    WebhookDelivery.objects.create(webhook_id="new")

    assert cleanup.forget_old_webhook_deliveries(dry_run=True) == 1
    assert cleanup.forget_old_webhook_deliveries() == 1
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == ["new"]


def _age(name: str, hours: float) -> None:
    path = default_storage.path(name)
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_orphaned_files_older_than_the_grace_period_are_deleted(funded):
    kept_selfie = make_avatar(funded).session.selfie.name
    orphan = default_storage.save("selfies/orphan.jpg", ContentFile(b"x"))
    young_orphan = default_storage.save("avatars/young.png", ContentFile(b"x"))
    elsewhere = default_storage.save("other/untouched.txt", ContentFile(b"x"))
    for name in (kept_selfie, orphan, elsewhere):
        _age(name, hours=2)

    assert cleanup.delete_orphaned_files(dry_run=True) == 1
    assert default_storage.exists(orphan)
    assert cleanup.delete_orphaned_files() == 1
    assert cleanup.delete_orphaned_files() == 0

    assert not default_storage.exists(orphan)
    assert all(default_storage.exists(n) for n in (kept_selfie, young_orphan, elsewhere))


def test_the_cleanup_command_reports_and_dry_runs(funded, capsys):
    with freeze_time(timezone.now() - timedelta(days=2)):
        make_avatar(funded)

    call_command("cleanup", "--dry-run")
    dry = capsys.readouterr().out
    call_command("cleanup")
    real = capsys.readouterr().out

    assert "would clean 1 expired selfies" in dry
    assert "cleaned 1 expired selfies" in real
    assert not SelfieSession.objects.filter(selfie_deleted_at__isnull=True).exists()


def test_cleanup_runs_on_beat(settings):
    assert settings.CELERY_BEAT_SCHEDULE["cleanup"]["task"] == "avatars.tasks.cleanup_task"
    assert settings.CELERY_BEAT_SCHEDULE["check-alerts"]["schedule"] == 300
    leftovers = settings.CELERY_BEAT_SCHEDULE["forget-leftover-uploads"]
    assert (leftovers["task"], leftovers["schedule"]) == (
        "avatars.tasks.forget_leftover_uploads_task",
        60,
    )
