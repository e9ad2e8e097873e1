"""Stray predictions (lost creates nobody could adopt) are canceled; nothing else is."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from avatars import generation, replicate_client, strays
from avatars.models import Prediction
from credits import services as credit_services
from tests.avatars.selfie_corpus import fixture_bytes
from tests.avatars.test_recovery import make_avatar

pytestmark = pytest.mark.django_db(transaction=True)

LATER = timedelta(minutes=2)  # past STRAY_AFTER: the step that made them is long gone


@pytest.fixture
def alices_avatar(pipeline, alice):
    credit_services.grant_credits(user=alice, amount=2)
    return make_avatar(alice, status="running", attempts=1)


def create_for(avatar) -> str:
    """A running prediction made with the avatar's input, as its lost create would have."""
    image = replicate_client.data_uri(fixture_bytes(), "image/jpeg")
    created = replicate_client.create_prediction(
        model=settings.REPLICATE_MODEL, input=generation.model_input(avatar, image)
    )
    return created.id


def status_at_replicate(pipeline, prediction_id: str) -> str:
    [found] = [p for p in pipeline.predictions() if p["id"] == prediction_id]
    return found["status"]


def test_an_unrecorded_running_prediction_of_ours_is_canceled(pipeline, alices_avatar):
    pipeline.hang(count=2)
    stray = create_for(alices_avatar)
    held = create_for(alices_avatar)
    Prediction.objects.create(avatar=alices_avatar, number=1, prediction_id=held, status="starting")

    canceled = strays.cancel_stray_predictions(now=timezone.now() + LATER)

    assert canceled == 1
    assert status_at_replicate(pipeline, stray) == "canceled"
    assert status_at_replicate(pipeline, held) != "canceled"


def test_a_young_one_may_still_be_stored_by_its_step(pipeline, alices_avatar):
    pipeline.hang()
    young = create_for(alices_avatar)

    assert strays.cancel_stray_predictions() == 0
    assert status_at_replicate(pipeline, young) != "canceled"


def test_a_stray_an_avatar_may_still_adopt_is_left_to_its_lookup(pipeline, alices_avatar):
    pipeline.hang()
    lost = create_for(alices_avatar)
    alices_avatar.create_sent_at = timezone.now()
    alices_avatar.save(update_fields=["create_sent_at"])

    assert strays.cancel_stray_predictions(now=timezone.now() + LATER) == 0
    assert status_at_replicate(pipeline, lost) != "canceled"


def test_predictions_of_other_users_or_tools_are_left_alone(pipeline, alices_avatar):
    pipeline.hang()
    not_ours = copy.copy(alices_avatar)
    not_ours.owner_id = 0  # the prompt lab's opaque user; nobody's avatar
    foreign = create_for(not_ours)

    assert strays.cancel_stray_predictions(now=timezone.now() + LATER) == 0
    assert status_at_replicate(pipeline, foreign) != "canceled"
