from __future__ import annotations

import pytest

from credits import services


def test_token_is_issued_for_valid_credentials(alice, anonymous_client):
    response = anonymous_client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "alice-password-1"}
    )

    assert response.status_code == 200
    assert len(response.json()["token"]) == 40


def test_token_is_refused_for_a_wrong_password(alice, anonymous_client):
    response = anonymous_client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "guess"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "token" not in response.json()


def test_a_token_works_as_authorization(alice, anonymous_client):
    token = anonymous_client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "alice-password-1"}
    ).json()["token"]

    response = anonymous_client.get("/api/v1/credits/", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/credits/"),
        ("post", "/api/v1/sessions/"),
        ("get", "/api/v1/sessions/6f1c1c3e-5d0a-4b7e-9a51-2a5d3c0f9b11/"),
    ],
)
def test_unauthenticated_calls_get_401_in_the_envelope(db, anonymous_client, method, path):
    response = getattr(anonymous_client, method)(path)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.json()["error"]["message"]


def test_a_bad_token_gets_401_in_the_envelope(db, anonymous_client):
    response = anonymous_client.get("/api/v1/credits/", HTTP_AUTHORIZATION="Token nope")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_credits_show_balance_and_entries_newest_first(alice, alice_client):
    services.grant_credits(user=alice, amount=5, memo="welcome")
    services.spend_credits(user=alice, amount=1, reference="avatar:1")

    body = alice_client.get("/api/v1/credits/").json()

    assert body["balance"] == 4
    assert body["count"] == 2
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in body["entries"]] == [
        ("spend", -1, 4),
        ("grant", 5, 5),
    ]


def test_credits_are_paginated(alice, alice_client):
    for _ in range(25):
        services.grant_credits(user=alice, amount=1)

    first = alice_client.get("/api/v1/credits/").json()
    second = alice_client.get(first["next"]).json()

    assert (len(first["entries"]), len(second["entries"])) == (20, 5)
    assert second["next"] is None
    assert first["entries"][0]["balance_after"] == 25


def test_credits_show_only_the_callers_own_ledger(alice, bob, bob_client):
    services.grant_credits(user=alice, amount=5)

    body = bob_client.get("/api/v1/credits/").json()

    assert (body["balance"], body["entries"]) == (0, [])


def test_openapi_schema_and_docs_are_served(db, anonymous_client):
    schema = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = anonymous_client.get("/api/docs/")

    assert schema.status_code == 200
    assert "/api/v1/sessions/" in schema.json()["paths"]
    assert docs.status_code == 200


def test_liveness_and_readiness(db, anonymous_client):
    assert anonymous_client.get("/healthz").json() == {"status": "ok"}
    ready = anonymous_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}


def test_readiness_reports_an_unreachable_broker(db, anonymous_client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    ready = anonymous_client.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": False}


class _UnreadableBody:
    """A request body that must never be read."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


@pytest.mark.parametrize("path", ["/api/v1/sessions/", "/api/v1/auth/token/", "/admin/login/"])
def test_a_body_larger_than_any_upload_is_refused_unread(db, alice_client, settings, path):
    from avatars.models import SelfieSession
    from config.body_limit import max_body_bytes

    response = alice_client.generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(max_body_bytes() + 1),
        **{"wsgi.input": _UnreadableBody()},
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not SelfieSession.objects.exists()
