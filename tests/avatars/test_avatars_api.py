"""The avatars API's own rules: charging, limits, idempotency, ownership. No worker runs here."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone
from freezegun import freeze_time

from avatars import breaker, pacing, prompts, waits
from avatars.models import Avatar, SelfieSession
from credits import services as credit_services
from credits.models import LedgerEntry
from tests.avatars import selfie_corpus
from tests.avatars.selfie_corpus import fixture_bytes


def upload_session(client) -> str:
    selfie = io.BytesIO(fixture_bytes())
    selfie.name = "me.jpg"
    return client.post("/api/v1/sessions/", {"selfie": selfie}, format="multipart").json()["id"]


def post_avatar(client, session_id: str, style: str = "comic", **headers):
    return client.post(
        "/api/v1/avatars/", {"session": session_id, "style": style}, format="json", **headers
    )


@pytest.fixture
def session_id(alice_client) -> str:
    return upload_session(alice_client)


@pytest.fixture
def funded(alice):
    credit_services.grant_credits(user=alice, amount=10)
    return alice


def test_styles_are_listed_with_comic_first(anonymous_client):
    body = anonymous_client.get("/api/v1/styles/").json()

    assert body[0]["id"] == "comic"
    assert {s["id"] for s in body} == set(prompts.STYLES)
    assert all(s["name"] and s["description"] for s in body)


def test_submitting_charges_one_credit_and_queues_the_avatar(funded, alice_client, session_id):
    response = post_avatar(alice_client, session_id)

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["style"], body["session"]) == ("queued", "comic", session_id)
    assert body["image_url"] is None and body["error"] is None and body["refund"] is None
    assert credit_services.get_balance(user=funded) == 9
    assert LedgerEntry.objects.get(kind="spend").reference == f"avatar:{body['id']}"


def test_without_credits_the_answer_is_402_and_nothing_is_created(alice, alice_client, session_id):
    response = post_avatar(alice_client, session_id)

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert not Avatar.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_an_unknown_style_is_a_validation_error(funded, alice_client, session_id):
    response = post_avatar(alice_client, session_id, style="oil_painting")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "style" in response.json()["error"]["fields"]
    assert credit_services.get_balance(user=funded) == 10


def test_someone_elses_session_is_not_found(funded, alice_client, bob_client):
    bobs_session = upload_session(bob_client)

    response = post_avatar(alice_client, bobs_session)

    assert response.status_code == 404
    assert not Avatar.objects.exists()
    assert credit_services.get_balance(user=funded) == 10


def test_an_expired_session_is_refused_without_charging(funded, alice_client, session_id):
    with freeze_time(timezone.now() + timedelta(hours=25)):
        response = post_avatar(alice_client, session_id)

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "session_expired"
    assert credit_services.get_balance(user=funded) == 10


def test_in_flight_avatars_are_limited_per_user(funded, alice_client, session_id, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 2
    assert post_avatar(alice_client, session_id).status_code == 202
    assert post_avatar(alice_client, session_id).status_code == 202

    response = post_avatar(alice_client, session_id)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_in_flight"
    assert credit_services.get_balance(user=funded) == 8
    Avatar.objects.filter(owner=funded).update(status="succeeded")
    assert post_avatar(alice_client, session_id).status_code == 202


def test_a_repeated_idempotency_key_returns_the_same_avatar_charged_once(
    funded, alice_client, session_id
):
    first = post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert credit_services.get_balance(user=funded) == 9


def test_an_idempotency_key_reused_for_another_request_is_a_conflict(
    funded, alice_client, session_id
):
    post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k-1")

    response = post_avatar(alice_client, session_id, style="manga", HTTP_IDEMPOTENCY_KEY="k-1")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert Avatar.objects.count() == 1
    assert credit_services.get_balance(user=funded) == 9


def test_the_same_idempotency_key_of_two_users_is_two_avatars(
    funded, bob, alice_client, bob_client, session_id
):
    credit_services.grant_credits(user=bob, amount=1)
    post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k-1")

    response = post_avatar(bob_client, upload_session(bob_client), HTTP_IDEMPOTENCY_KEY="k-1")

    assert response.status_code == 202
    assert Avatar.objects.count() == 2


def test_avatars_are_listed_newest_first_and_filtered_by_session(
    funded, alice_client, session_id, settings
):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 5
    other_session = upload_session(alice_client)
    first = post_avatar(alice_client, session_id).json()
    second = post_avatar(alice_client, other_session).json()

    listed = alice_client.get("/api/v1/avatars/").json()
    filtered = alice_client.get(f"/api/v1/avatars/?session={session_id}").json()

    assert [a["id"] for a in listed["results"]] == [second["id"], first["id"]]
    assert [a["id"] for a in filtered["results"]] == [first["id"]]
    assert alice_client.get("/api/v1/avatars/?session=nope").status_code == 400
    session = alice_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert [a["id"] for a in session["avatars"]] == [first["id"]]


def test_users_see_only_their_own_avatars(funded, alice_client, bob_client, session_id):
    avatar = post_avatar(alice_client, session_id).json()

    assert bob_client.get(f"/api/v1/avatars/{avatar['id']}/").status_code == 404
    assert bob_client.get(f"/api/v1/avatars/{avatar['id']}/image/").status_code == 404
    assert bob_client.post(f"/api/v1/avatars/{avatar['id']}/cancel/").status_code == 404
    assert bob_client.get("/api/v1/avatars/").json()["results"] == []
    assert Avatar.objects.get().status == "queued"


def test_anonymous_clients_get_401(db, anonymous_client):
    assert anonymous_client.get("/api/v1/avatars/").status_code == 401
    assert anonymous_client.post("/api/v1/avatars/", {}).status_code == 401


def test_canceling_a_queued_avatar_refunds_it(funded, alice_client, session_id):
    avatar = post_avatar(alice_client, session_id).json()

    response = alice_client.post(f"/api/v1/avatars/{avatar['id']}/cancel/")

    assert response.status_code == 202
    assert response.json()["status"] == "canceled"
    assert response.json()["error"]["code"] == "canceled"
    assert response.json()["refund"] == {"status": "refunded", "amount": 1}
    assert credit_services.get_balance(user=funded) == 10


def test_a_finished_avatar_can_not_be_canceled(funded, alice_client, session_id):
    avatar = post_avatar(alice_client, session_id).json()
    Avatar.objects.filter(pk=avatar["id"]).update(status="succeeded")

    response = alice_client.post(f"/api/v1/avatars/{avatar['id']}/cancel/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "avatar_finished"
    assert credit_services.get_balance(user=funded) == 9


# --- while the provider has trouble ------------------------------------------------------------


def test_unfinished_avatars_carry_a_notice_while_the_breaker_is_open(
    alice_client, funded, session_id, settings
):
    settings.REPLICATE_BREAKER_THRESHOLD = 1
    settings.TIME_ZONE = "UTC"
    waiting = post_avatar(alice_client, session_id).json()
    done = Avatar.objects.create(
        owner=funded,
        session_id=session_id,
        style="comic",
        prompt_version=prompts.PROMPT_VERSION,
        status="succeeded",
    )
    Avatar.objects.filter(pk=waiting["id"]).update(
        deadline_at=timezone.now().replace(hour=14, minute=32, second=0, microsecond=0)
    )
    assert alice_client.get(f"/api/v1/avatars/{waiting['id']}/").json()["notice"] is None

    breaker.record_failure()

    shown = alice_client.get(f"/api/v1/avatars/{waiting['id']}/").json()
    assert shown["notice"]["code"] == "provider_unavailable"
    assert shown["notice"]["message"] == (
        "The image service is having trouble; we keep trying until 14:32."
    )
    assert alice_client.get(f"/api/v1/avatars/{done.pk}/").json()["notice"] is None
    listed = alice_client.get("/api/v1/avatars/").json()["results"]
    assert {a["id"]: a["notice"] is not None for a in listed} == {
        waiting["id"]: True,
        str(done.pk): False,
    }


def test_an_avatar_waiting_for_a_create_slot_knows_its_place(alice_client, funded, session_id):
    first = post_avatar(alice_client, session_id).json()
    second = post_avatar(alice_client, session_id).json()
    pacing.record_throttled(60.0)  # every create waits a minute
    for index, avatar in enumerate((first, second)):
        assert not pacing.take_turn(avatar["id"], submitted_at=index).granted

    positions = [
        alice_client.get(f"/api/v1/avatars/{a['id']}/").json()["queue_position"]
        for a in (first, second)
    ]

    assert positions == [1, 2]


def test_the_api_still_answers_when_redis_is_unreachable(
    alice_client, funded, session_id, settings
):
    avatar = post_avatar(alice_client, session_id).json()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    shown = alice_client.get(f"/api/v1/avatars/{avatar['id']}/")

    assert shown.status_code == 200
    assert (shown.json()["notice"], shown.json()["queue_position"]) == (None, None)


# --- the daily spend cap ---------------------------------------------------------------------


def _ended_today(owner, session_id: str, cost: str) -> Avatar:
    return Avatar.objects.create(
        owner=owner,
        session_id=session_id,
        style="comic",
        prompt_version=prompts.PROMPT_VERSION,
        status=Avatar.Status.SUCCEEDED,
        completed_at=timezone.now(),
        cost_usd=Decimal(cost),
    )


@pytest.fixture
def capped(settings):
    """A limit of $0.80 a day, with each avatar estimated at $0.19 (gpt-image-2, high)."""
    settings.AVATAR_DAILY_SPEND_LIMIT_USD = 0.80
    settings.REPLICATE_MODEL = "openai/gpt-image-2"
    settings.AVATAR_IMAGE_QUALITY = "high"


@freeze_time("2026-12-04 18:30:00")
def test_when_todays_cost_and_whats_in_flight_reach_the_limit_submissions_get_503(
    alice_client, funded, session_id, capped
):
    _ended_today(funded, session_id, "0.50")
    # $0.50 spent, then $0.69 and $0.88 with one and two in flight
    assert post_avatar(alice_client, session_id).status_code == 202
    assert post_avatar(alice_client, session_id).status_code == 202

    refused = post_avatar(alice_client, session_id)

    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "capacity_reached"
    assert "Nothing was charged" in error["message"] and "00:00 UTC" in error["message"]
    assert refused["Retry-After"] == str(5 * 3600 + 30 * 60)  # until midnight UTC
    assert credit_services.get_balance(user=funded) == 8
    assert Avatar.objects.count() == 3


@freeze_time("2026-12-04 18:30:00")
def test_yesterdays_cost_does_not_count_against_today(alice_client, funded, session_id, capped):
    with freeze_time("2026-12-03 23:59:00"):
        _ended_today(funded, session_id, "5.00")

    assert post_avatar(alice_client, session_id).status_code == 202


def test_without_a_limit_nothing_is_refused_whatever_was_spent(
    alice_client, funded, session_id, settings
):
    assert settings.AVATAR_DAILY_SPEND_LIMIT_USD is None
    _ended_today(funded, session_id, "1000")

    assert post_avatar(alice_client, session_id).status_code == 202


@freeze_time("2026-12-04 18:30:00")
def test_a_repeated_request_still_gets_its_avatar_once_the_cap_is_reached(
    alice_client, funded, session_id, capped
):
    first = post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k1")
    _ended_today(funded, session_id, "1.00")

    again = post_avatar(alice_client, session_id, HTTP_IDEMPOTENCY_KEY="k1")

    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert post_avatar(alice_client, session_id).status_code == 503


# --- the face check before paying ------------------------------------------------------------


def upload(client, data: bytes) -> dict:
    selfie = io.BytesIO(data)
    selfie.name = "photo.jpg"
    response = client.post("/api/v1/sessions/", {"selfie": selfie}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_portrait_passes_the_face_check_and_says_what_was_found(alice_client):
    session = upload(alice_client, fixture_bytes())

    assert session["face_check"] is None
    assert session["faces_found"] == 1 and 0.15 <= session["face_share"] < 0.3
    stored = SelfieSession.objects.get(pk=session["id"])
    assert (stored.face_check, stored.faces_found) == ("ok", 1)


def test_a_photo_without_a_face_costs_nothing_until_it_is_confirmed(alice_client, funded):
    session = upload(alice_client, selfie_corpus.landscape())
    assert session["face_check"]["status"] == "no_face"
    assert "could not find a face" in session["face_check"]["message"]
    assert (
        alice_client.get(f"/api/v1/sessions/{session['id']}/").json()["face_check"]
        == (session["face_check"])
    )

    refused = post_avatar(alice_client, session["id"])

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "face_check_failed"
    assert "Nothing was charged" in refused.json()["error"]["message"]
    assert credit_services.get_balance(user=funded) == 10
    assert not Avatar.objects.exists()

    confirmed = alice_client.post(
        "/api/v1/avatars/", {"session": session["id"], "confirm": True}, format="json"
    )

    assert confirmed.status_code == 202
    assert credit_services.get_balance(user=funded) == 9


@pytest.mark.parametrize(
    "make, status",
    [
        (selfie_corpus.two_portraits_side_by_side, "several_faces"),
        (selfie_corpus.small_face_on_a_large_canvas, "face_too_small"),
    ],
)
def test_several_faces_or_a_small_one_warn_too(alice_client, funded, make, status):
    session = upload(alice_client, make())

    assert session["face_check"]["status"] == status
    assert post_avatar(alice_client, session["id"]).status_code == 409


def test_with_the_face_check_off_no_photo_is_questioned(alice_client, funded, settings):
    settings.SELFIE_FACE_CHECK = False
    session = upload(alice_client, selfie_corpus.plain_picture())

    assert (session["face_check"], session["faces_found"], session["face_share"]) == (
        None,
        None,
        None,
    )
    assert post_avatar(alice_client, session["id"]).status_code == 202


# --- an honest wait --------------------------------------------------------------------------


def _succeeded_taking(owner, session_id: str, seconds: float) -> None:
    ended = timezone.now() - timedelta(minutes=5)
    avatar = _ended_today(owner, session_id, "0")
    Avatar.objects.filter(pk=avatar.pk).update(
        created_at=ended - timedelta(seconds=seconds), completed_at=ended
    )
    cache.delete(waits.CACHE_KEY)  # as if the cached figure (up to 15 s old) had expired


@freeze_time("2026-12-04 12:00:00")
def test_an_unfinished_avatar_expects_the_median_of_the_last_hour_minus_its_time_so_far(
    alice_client, funded, session_id
):
    for seconds in (30, 40, 50):
        _succeeded_taking(funded, session_id, seconds)
    with freeze_time("2026-12-04 10:00:00"):  # over an hour ago: not counted
        _ended_today(funded, session_id, "0")
    fresh = post_avatar(alice_client, session_id).json()
    assert fresh["eta_seconds"] == 40

    with freeze_time("2026-12-04 12:00:10"):
        assert alice_client.get(f"/api/v1/avatars/{fresh['id']}/").json()["eta_seconds"] == 30
    with freeze_time("2026-12-04 12:01:30"):  # longer than usual: never below zero
        assert alice_client.get(f"/api/v1/avatars/{fresh['id']}/").json()["eta_seconds"] == 0
    done = Avatar.objects.filter(status="succeeded").first()
    assert alice_client.get(f"/api/v1/avatars/{done.pk}/").json()["eta_seconds"] is None


def test_without_completions_in_the_last_hour_there_is_no_estimate(
    alice_client, funded, session_id, anonymous_client
):
    avatar = post_avatar(alice_client, session_id).json()

    assert avatar["eta_seconds"] is None
    assert anonymous_client.get("/api/v1/status/").json()["typical_seconds"] is None


def test_the_status_says_how_long_it_takes_how_many_wait_and_how_the_provider_is(
    alice_client, funded, session_id, anonymous_client
):
    _succeeded_taking(funded, session_id, 42)
    pacing.record_throttled(60.0)  # every create waits a minute
    for index in range(2):
        assert not pacing.take_turn(f"waiting-{index}", submitted_at=index).granted

    status = anonymous_client.get("/api/v1/status/")

    assert status.status_code == 200
    assert status.json()["typical_seconds"] == pytest.approx(42)
    assert status.json()["provider"] == "degraded"  # creates are slowed after a 429
    assert status.json()["queue_length"] == 2


def test_the_status_is_ok_normally_and_unavailable_while_the_breaker_is_open(db, anonymous_client):
    assert anonymous_client.get("/api/v1/status/").json() == {
        "typical_seconds": None,
        "queue_length": 0,
        "provider": "ok",
    }
    for _ in range(3):
        breaker.record_failure()

    assert anonymous_client.get("/api/v1/status/").json()["provider"] == "unavailable"


def test_the_typical_time_is_aggregated_once_per_cache_period(
    alice_client, funded, session_id, django_assert_max_num_queries
):
    _succeeded_taking(funded, session_id, 42)
    waits.typical_seconds()
    later = _ended_today(funded, session_id, "0")
    Avatar.objects.filter(pk=later.pk).update(created_at=timezone.now() - timedelta(hours=0.9))

    with django_assert_max_num_queries(0):
        assert waits.typical_seconds() == pytest.approx(42)
