"""Erasure of a big account: its request asks Replicate nothing (issue 14)."""

from __future__ import annotations

import time

import pytest

from avatars import replicate_client
from avatars.models import Avatar, Prediction
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar


@pytest.mark.django_db
def test_an_account_with_500_past_avatars_is_erased_without_a_call_per_prediction(
    alice, monkeypatch, client, report
):
    credit_services.grant_credits(user=alice, amount=500)
    first = make_avatar(alice, status="succeeded")
    for _ in range(499):
        make_avatar(alice, session=first.session, status="succeeded")
    Prediction.objects.bulk_create(
        # ids of uploads from before they were forgotten when their predictions ended
        Prediction(avatar=avatar, number=1, prediction_id=f"p-{index}", input_file_id=f"f-{index}")
        for index, avatar in enumerate(Avatar.objects.all())
    )
    calls: list[str] = []
    monkeypatch.setattr(replicate_client, "delete_file", calls.append)
    client.force_login(alice)

    started = time.perf_counter()
    response = client.delete("/api/v1/account/data/")
    took = time.perf_counter() - started

    assert response.status_code == 204, response.content
    assert calls == []
    report(f"erasure: an account with 500 past avatars answered 204 in {took:.2f} s")
