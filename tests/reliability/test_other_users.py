"""User B against every endpoint that names one of user A's objects: never found, never changed."""

from __future__ import annotations

import pytest

from avatars.models import Avatar, SelfieSession
from credits import services as credit_services
from tests.avatars.test_recovery import make_avatar
from tests.reliability.tally import assert_invariants


@pytest.fixture
def alices_objects(alice):
    credit_services.grant_credits(user=alice, amount=2)
    avatar = make_avatar(alice, status="running", attempts=1)
    return avatar.session_id, avatar.pk


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/sessions/{session}/"),
        ("delete", "/api/v1/sessions/{session}/"),
        ("get", "/api/v1/avatars/{avatar}/"),
        ("post", "/api/v1/avatars/{avatar}/cancel/"),
        ("get", "/api/v1/avatars/{avatar}/image/"),
    ],
)
def test_user_b_gets_404_on_user_as_objects_and_changes_nothing(
    alices_objects, bob_client, method, path
):
    session_id, avatar_id = alices_objects

    response = getattr(bob_client, method)(path.format(session=session_id, avatar=avatar_id))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert Avatar.objects.get(pk=avatar_id).status == "running"
    assert SelfieSession.objects.get(pk=session_id).selfie_deleted_at is None
    assert_invariants()


def test_user_b_can_not_submit_on_or_list_user_as_session(alices_objects, bob, bob_client):
    session_id, _ = alices_objects
    credit_services.grant_credits(user=bob, amount=1)

    submitted = bob_client.post("/api/v1/avatars/", {"session": str(session_id)}, format="json")
    listed = bob_client.get(f"/api/v1/avatars/?session={session_id}")

    assert submitted.status_code == 404
    assert listed.json()["results"] == []
    assert credit_services.get_balance(user=bob) == 1
    assert_invariants()
