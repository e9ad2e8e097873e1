"""The counting throttle: the rate per window, a Retry-After that says when it opens again."""

from __future__ import annotations

import pytest
from freezegun import freeze_time
from rest_framework.throttling import ScopedRateThrottle


@pytest.fixture
def three_sign_ins_a_minute(monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/min"})


def sign_in(client):
    return client.post("/api/v1/auth/token/", {"username": "x", "password": "y"})


@pytest.mark.django_db
def test_the_window_opens_at_the_first_request_and_closes_a_period_later(
    anonymous_client, three_sign_ins_a_minute
):
    with freeze_time("2026-11-27 10:00:50") as clock:
        first = [sign_in(anonymous_client).status_code for _ in range(3)]
        clock.tick(20)  # past the minute on the clock, not past the window
        refused = sign_in(anonymous_client)
        clock.tick(41)
        again = sign_in(anonymous_client)

    assert first == [400, 400, 400]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) == 40
    assert again.status_code == 400


@pytest.mark.django_db
def test_each_address_has_its_own_count(anonymous_client, client, three_sign_ins_a_minute):
    for _ in range(3):
        sign_in(anonymous_client)

    other = client.post(
        "/api/v1/auth/token/", {"username": "x", "password": "y"}, REMOTE_ADDR="10.0.0.2"
    )

    assert sign_in(anonymous_client).status_code == 429
    assert other.status_code == 400
