"""Bursts past the throttles, counted in the real Redis every web process shares."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.throttling import ScopedRateThrottle

from credits import services as credit_services
from tests.avatars.test_avatars_api import post_avatar, upload_session
from tests.concurrency import run_concurrently
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_cache(settings) -> Iterator[str]:
    """The production cache backend, under a key prefix of this test's own."""
    prefix = f"test-throttles-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    yield prefix
    counters = redis.Redis.from_url(settings.REDIS_URL)
    for key in counters.scan_iter(f"{prefix}*"):
        counters.delete(key)


@pytest.fixture
def without_lockout(settings):
    """The throttle alone: repeated wrong passwords would otherwise lock the address (axes)."""
    settings.AXES_ENABLED = False


def test_bursts_past_the_throttles_get_429_throttled(
    redis_cache, alice, alice_client, anonymous_client, settings, monkeypatch, report
):
    credit_services.grant_credits(user=alice, amount=10)
    session_id = upload_session(alice_client)
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 50
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"submissions": "3/min", "uploads": "3/min", "auth": "2/min"},  # one upload made above
    )

    submissions = [post_avatar(alice_client, session_id).status_code for _ in range(4)]
    uploads = [
        alice_client.post("/api/v1/sessions/", {}, format="multipart").status_code for _ in range(3)
    ]
    sign_ins = [
        anonymous_client.post("/api/v1/auth/token/", {"username": "x", "password": "y"})
        for _ in range(3)
    ]

    assert submissions == [202, 202, 202, 429]
    assert uploads == [400, 400, 429]
    assert [r.status_code for r in sign_ins] == [400, 400, 429]
    assert sign_ins[-1].json()["error"]["code"] == "throttled"
    assert int(sign_ins[-1]["Retry-After"]) > 0
    assert credit_services.get_balance(user=alice) == 7, "a throttled submission costs nothing"
    assert alice_client.get("/api/v1/avatars/").status_code == 200, "reading is not throttled"
    assert redis.Redis.from_url(settings.REDIS_URL).keys(f"{redis_cache}*"), "counted in Redis"
    assert_invariants()
    report("throttles: 4 submissions, 3 uploads, 3 sign-ins in a burst; the last of each got 429")


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_burst_gets_no_more_than_the_rate(
    redis_cache, without_lockout, alice, alice_client, settings, monkeypatch, report
):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "5/min", "uploads": "5/min"})
    token = Token.objects.get(user=alice).key

    def sign_in(i: int) -> int:
        return Client().post("/api/v1/auth/token/", {"username": "x", "password": "y"}).status_code

    def upload(i: int) -> int:
        return (
            Client().post("/api/v1/sessions/", {}, HTTP_AUTHORIZATION=f"Token {token}").status_code
        )

    sign_ins = Counter(run_concurrently(sign_in, 20))
    uploads = Counter(run_concurrently(upload, 20))

    assert sign_ins == {400: 5, 429: 15}, sign_ins
    assert uploads == {400: 5, 429: 15}, uploads
    assert_invariants()
    report("throttles: 20 sign-ins and 20 uploads at once at 5/min: 5 of each let through")


def _answer_from(forwarded_for: str, remote_addr: str = "10.0.0.9"):
    return Client().post(
        "/api/v1/auth/token/",
        {"username": "x", "password": "y"},
        HTTP_X_FORWARDED_FOR=forwarded_for,
        REMOTE_ADDR=remote_addr,
    )


def _sign_in_from(forwarded_for: str, remote_addr: str = "10.0.0.9") -> int:
    return _answer_from(forwarded_for, remote_addr).status_code


def test_a_rotated_x_forwarded_for_does_not_get_past_the_sign_in_throttle(
    redis_cache, without_lockout, report
):
    # Given no proxy in front (the default) and the default 20 sign-ins a minute per address
    # When one client sends 30, each claiming another address in X-Forwarded-For
    answers = Counter(_sign_in_from(f"203.0.113.{i}") for i in range(30))

    # Then it is counted as the one address it comes from
    assert answers == {400: 20, 429: 10}, answers
    report("throttles: 30 sign-ins rotating X-Forwarded-For (no proxy): 20 let through, 10 got 429")


def test_a_rotated_x_forwarded_for_does_not_get_past_the_lockout_either(redis_cache, report):
    # Given the lockout too (5 failures) in front of the same throttle
    # When one client sends 30 wrong passwords, each claiming another address
    answers = Counter(_answer_from(f"203.0.113.{i}").json()["error"]["code"] for i in range(30))

    # Then 4 are told the password is wrong, the fifth locks the address, the throttle the rest
    assert answers == {"validation_error": 4, "locked_out": 16, "throttled": 10}, answers
    report(
        "sign-in: 30 wrong passwords rotating X-Forwarded-For: 4 answered 400, then 26 got 429"
        f" ({answers['locked_out']} locked_out, {answers['throttled']} throttled)"
    )


def test_behind_one_proxy_the_address_it_saw_is_the_client(redis_cache, without_lockout, settings):
    # Given one trusted proxy, which appends the address it saw to whatever the client wrote
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.2"

    # When one client rotates what it writes, and 3 others sign in through the same proxy
    rotating = Counter(_sign_in_from(f"198.51.100.{i}, 203.0.113.7", proxy) for i in range(25))
    others = [_sign_in_from(f"203.0.113.{i}", proxy) for i in (20, 21, 22)]

    # Then the rotating one is throttled as one address, the others are not
    assert rotating == {400: 20, 429: 5}, rotating
    assert others == [400, 400, 400]
