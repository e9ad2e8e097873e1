"""Every door that takes a password: limited per address, locked per address and per username."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from freezegun import freeze_time
from rest_framework.throttling import ScopedRateThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """Each attempt hashes a password: a cheap hasher keeps dozens of them fast."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


PAGE = "/accounts/login/"
ADMIN = "/admin/login/"
TOKEN = "/api/v1/auth/token/"


def sign_in(door: str, username: str, password: str, address: str = "10.0.0.9", **headers):
    return Client().post(
        door, {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def fail(door: str, times: int, username: str = "alice", address: str = "10.0.0.9") -> list[int]:
    return [sign_in(door, username, "wrong", address).status_code for _ in range(times)]


def signed_in(response) -> bool:
    return "_auth_user_id" in (response.wsgi_request.session or {})


def test_five_failures_lock_the_page_even_for_the_right_password(alice):
    failures = fail(PAGE, 5)

    locked = sign_in(PAGE, "alice", "alice-password-1")

    assert failures == [200] * 4 + [429]  # the form again with its error; the fifth locks
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert int(locked["Retry-After"]) == 15 * 60
    assert not signed_in(locked)


def test_a_username_is_locked_whatever_address_the_failures_came_from(alice):
    for i in range(5):
        fail(PAGE, 1, address=f"10.0.1.{i}")

    assert sign_in(PAGE, "alice", "alice-password-1", "10.0.2.1").status_code == 429


def test_an_address_is_locked_whatever_usernames_it_tried(alice, bob):
    for name in ("u1", "u2", "u3", "u4", "u5"):
        fail(PAGE, 1, username=name)

    from_there = sign_in(PAGE, "bob", "bob-password-1")
    from_elsewhere = sign_in(PAGE, "bob", "bob-password-1", "10.0.3.1")

    assert from_there.status_code == 429
    assert from_elsewhere.status_code == 302 and signed_in(from_elsewhere)


def test_the_lock_lifts_a_cool_off_after_the_last_attempt(alice):
    with freeze_time("2026-12-03 10:00:00") as clock:
        fail(PAGE, 5)
        clock.tick(14 * 60)
        still = sign_in(PAGE, "alice", "alice-password-1")  # refused, and the cool-off restarts
        clock.tick(14 * 60)
        again = sign_in(PAGE, "alice", "alice-password-1")
        clock.tick(15 * 60 + 1)
        after = sign_in(PAGE, "alice", "alice-password-1")

    assert [still.status_code, again.status_code] == [429, 429]
    assert after.status_code == 302 and signed_in(after)


def test_a_success_forgets_the_failures_before_it(alice):
    answers = []
    for _ in range(3):
        fail(PAGE, 4)
        answers.append(sign_in(PAGE, "alice", "alice-password-1").status_code)

    assert answers == [302, 302, 302]


def test_the_admin_sign_in_is_locked_too(db):
    get_user_model().objects.create_superuser("root", password="root-password-1")
    fail(ADMIN, 5, username="root")

    locked = sign_in(ADMIN, "root", "root-password-1")

    assert locked.status_code == 429
    assert not signed_in(locked)


def test_the_token_endpoint_answers_locked_out_in_the_envelope(alice):
    failures = fail(TOKEN, 5)

    locked = sign_in(TOKEN, "alice", "alice-password-1")

    assert failures == [400] * 4 + [429]
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "locked_out"
    assert "token" not in locked.json()
    assert int(locked["Retry-After"]) == 15 * 60


def test_failures_at_one_door_count_at_the_others(alice):
    fail(PAGE, 2)
    fail(ADMIN, 2)
    fail(TOKEN, 1)

    assert sign_in(TOKEN, "alice", "alice-password-1").status_code == 429


def test_the_page_is_rate_limited_per_address_like_the_token_endpoint(alice, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/min"})

    answers = [sign_in(PAGE, "alice", "alice-password-1").status_code for _ in range(4)]
    elsewhere = sign_in(PAGE, "alice", "alice-password-1", "10.0.4.1")

    assert answers == [302, 302, 302, 429]
    assert elsewhere.status_code == 302


def test_a_rotated_x_forwarded_for_is_one_address_to_the_lockout(alice, bob):
    for i in range(5):
        sign_in(PAGE, f"u{i}", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")

    assert (
        sign_in(PAGE, "bob", "bob-password-1", HTTP_X_FORWARDED_FOR="203.0.113.99").status_code
        == 429
    )


def test_behind_one_trusted_proxy_the_address_it_saw_is_locked(alice, bob, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.2"
    for i in range(5):
        sign_in(PAGE, f"u{i}", "wrong", proxy, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7")

    locked = sign_in(PAGE, "bob", "bob-password-1", proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    other = sign_in(PAGE, "bob", "bob-password-1", proxy, HTTP_X_FORWARDED_FOR="203.0.113.8")

    assert locked.status_code == 429
    assert other.status_code == 302
