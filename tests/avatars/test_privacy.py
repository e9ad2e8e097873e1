"""Private media and logs without personal data (issue 9, items 1 and 4)."""

from __future__ import annotations

import base64
import io
import json
import logging
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.utils import timezone
from freezegun import freeze_time
from PIL import Image

from avatars import image_urls, storage
from avatars.erasure import erase_session
from avatars.models import Avatar, SelfieSession
from credits import services as credit_services
from tests.avatars.selfie_corpus import fixture_bytes
from tests.avatars.test_pipeline import wait_until_finished
from tests.avatars.test_recovery import make_avatar
from tests.conftest import PIPELINE_SETTINGS, _client_for

IMAGE_PATH_PREFIX = "/api/v1/avatar-images/"


def png_1024() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), (200, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def finish_with_image(avatar: Avatar) -> Avatar:
    """Give an avatar a stored image, as a successful generation does."""
    stored = storage.store_avatar_image(png_1024())
    avatar.status = Avatar.Status.SUCCEEDED
    avatar.image.name = stored.name
    avatar.width, avatar.height, avatar.image_sha256 = stored.width, stored.height, stored.sha256
    avatar.completed_at = timezone.now()
    avatar.save()
    return avatar


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=5)
    return alice


@pytest.fixture
def alice_avatar(funded_alice) -> Avatar:
    return finish_with_image(make_avatar(funded_alice))


def image_url_of(client, avatar: Avatar) -> str:
    response = client.get(f"/api/v1/avatars/{avatar.pk}/")
    assert response.status_code == 200
    return response.json()["image_url"]


def token_of(url: str) -> str:
    path = url.split("://", 1)[-1].split("/", 1)[1]
    return path.removeprefix(IMAGE_PATH_PREFIX.lstrip("/")).rstrip("/")


def assert_private(response) -> None:
    assert response["Cache-Control"].startswith("private")
    assert response["X-Content-Type-Options"] == "nosniff"


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert_private(response)


# --- signed image URLs -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_signed_image_url_serves_the_image_without_an_auth_header(
    alice_avatar, alice_client, anonymous_client, settings
):
    url = image_url_of(alice_client, alice_avatar)

    response = anonymous_client.get(url)

    assert IMAGE_PATH_PREFIX in url
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == f"private, max-age={settings.AVATAR_IMAGE_URL_MAX_AGE}"
    assert response["X-Content-Type-Options"] == "nosniff"
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


@pytest.mark.django_db
def test_behind_an_https_proxy_image_urls_are_https_and_http_is_redirected(
    alice_avatar, alice_client, settings
):
    # What DJANGO_HTTPS=true sets (tests/config/test_settings.py)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

    through_proxy = alice_client.get(
        f"/api/v1/avatars/{alice_avatar.pk}/", HTTP_X_FORWARDED_PROTO="https"
    )
    plain = alice_client.get(f"/api/v1/avatars/{alice_avatar.pk}/")

    assert through_proxy.json()["image_url"].startswith("https://")
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    assert alice_client.get("/healthz").status_code == 200, "probes over http are not redirected"


@pytest.mark.django_db
def test_the_image_url_says_nothing_of_where_the_file_is_stored(alice_avatar, alice_client):
    url = image_url_of(alice_client, alice_avatar)

    stored_name = alice_avatar.image.name
    assert stored_name not in url
    assert stored_name.rsplit("/", 1)[-1].split(".")[0] not in url
    assert "/media/" not in url


def bob_with_credits(bob):
    credit_services.grant_credits(user=bob, amount=1)
    return bob


@pytest.mark.django_db
def test_another_user_gets_neither_the_image_nor_a_url_for_it(
    alice_avatar, alice_client, bob, bob_client
):
    bob_avatar = finish_with_image(make_avatar(bob_with_credits(bob)))
    bobs_token = token_of(image_url_of(bob_client, bob_avatar))
    # Bob's own valid link, with the avatar id in it swapped for Alice's.
    payload, timestamp, signature = bobs_token.split(":")
    forged_payload = signing.b64_encode(
        json.dumps([alice_avatar.pk.hex, bob.pk], separators=(",", ":")).encode()
    ).decode()

    assert bob_client.get(f"/api/v1/avatars/{alice_avatar.pk}/").status_code == 404
    assert alice_avatar.pk.hex not in json.dumps(bob_client.get("/api/v1/avatars/").json())
    assert_refused(bob_client.get(f"/api/v1/avatars/{alice_avatar.pk}/image/"), 404, "not_found")
    forged = f"{IMAGE_PATH_PREFIX}{forged_payload}:{timestamp}:{signature}/"
    assert_refused(bob_client.get(forged), 404, "not_found")


@pytest.mark.django_db
def test_an_anonymous_client_can_not_use_the_authenticated_image_view(
    alice_avatar, anonymous_client
):
    response = anonymous_client.get(f"/api/v1/avatars/{alice_avatar.pk}/image/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_owner_may_still_use_the_authenticated_image_view(alice_avatar, alice_client):
    response = alice_client.get(f"/api/v1/avatars/{alice_avatar.pk}/image/")

    assert response.status_code == 200
    assert_private(response)


def _tampered_tokens(token: str, avatar: Avatar) -> dict[str, str]:
    payload, timestamp, signature = token.split(":")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    same_payload = [avatar.pk.hex, avatar.owner_id]
    return {
        "signature-flipped": f"{payload}:{timestamp}:{flipped}",
        "timestamp-changed": f"{payload}:{signing.b62_encode(10**10)}:{signature}",
        "signature-missing": f"{payload}:{timestamp}",
        "guessed": "WyJub3RoaW5nIl0:1tXkQk:c2lnbmF0dXJlLWd1ZXNzZWQ",
        "other-salt": signing.TimestampSigner(salt="something.else").sign_object(same_payload),
        "other-key": signing.TimestampSigner(
            key="not-our-secret-key", salt=image_urls.SALT
        ).sign_object(same_payload),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "variant",
    [
        "signature-flipped",
        "timestamp-changed",
        "signature-missing",
        "guessed",
        "other-salt",
        "other-key",
    ],
)
def test_a_tampered_or_guessed_signed_url_is_refused(
    alice_avatar, alice_client, anonymous_client, variant
):
    token = token_of(image_url_of(alice_client, alice_avatar))

    response = anonymous_client.get(
        f"{IMAGE_PATH_PREFIX}{_tampered_tokens(token, alice_avatar)[variant]}/"
    )

    assert_refused(response, 404, "not_found")


@pytest.mark.django_db
def test_a_signed_url_works_until_its_max_age_then_is_refused(
    alice_avatar, alice_client, anonymous_client, settings
):
    settings.AVATAR_IMAGE_URL_MAX_AGE = 600
    with freeze_time("2026-03-01 12:00:00") as clock:
        url = image_url_of(alice_client, alice_avatar)

        clock.tick(timedelta(seconds=599))
        assert anonymous_client.get(url).status_code == 200

        clock.tick(timedelta(seconds=2))
        assert_refused(anonymous_client.get(url), 403, "link_expired")
        assert_refused(alice_client.get(url), 403, "link_expired")

        fresh = image_url_of(alice_client, alice_avatar)
        assert fresh != url
        assert anonymous_client.get(fresh).status_code == 200


@pytest.mark.django_db
def test_reads_close_together_get_the_same_url_so_browsers_can_cache_it(
    alice_avatar, alice_client, settings
):
    settings.AVATAR_IMAGE_URL_MAX_AGE = 600  # signed in steps of 60 s
    with freeze_time("2026-03-01 12:00:05") as clock:
        first = image_url_of(alice_client, alice_avatar)
        clock.tick(timedelta(seconds=50))
        second = image_url_of(alice_client, alice_avatar)
        clock.tick(timedelta(seconds=10))
        third = image_url_of(alice_client, alice_avatar)

    assert first == second != third


@pytest.mark.django_db
def test_a_signed_url_stops_working_once_the_session_is_erased(
    alice_avatar, alice_client, anonymous_client
):
    url = image_url_of(alice_client, alice_avatar)

    erase_session(owner=alice_avatar.owner, session_id=alice_avatar.session_id)

    assert_refused(anonymous_client.get(url), 404, "not_found")
    assert image_url_of(alice_client, alice_avatar) is None


@pytest.mark.django_db
def test_staff_are_given_a_working_link_by_the_same_function(alice_avatar, admin_client):
    url = image_urls.avatar_image_url(alice_avatar)

    assert url.startswith(IMAGE_PATH_PREFIX)
    assert admin_client.get(url).status_code == 200


@pytest.mark.django_db
def test_a_signed_url_is_only_made_for_a_finished_image(funded_alice, alice_client):
    running = make_avatar(funded_alice, status="running", attempts=1)

    assert image_url_of(alice_client, running) is None


@pytest.mark.django_db
def test_a_storage_that_can_presign_gives_its_own_short_lived_url(alice_avatar, settings):
    class PresigningStorage:
        """Stands in for django-storages' S3 backend with querystring_auth (not installed)."""

        querystring_auth = True

        def url(self, name: str, parameters=None, expire=None, http_method=None) -> str:
            return f"https://bucket.example/{name}?X-Amz-Expires={expire}&X-Amz-Signature=s"

    settings.AVATAR_IMAGE_URL_MAX_AGE = 900
    alice_avatar.image.storage = PresigningStorage()

    url = image_urls.avatar_image_url(alice_avatar)

    assert (
        url
        == f"https://bucket.example/{alice_avatar.image.name}?X-Amz-Expires=900&X-Amz-Signature=s"
    )


# --- selfies have no URL -----------------------------------------------------------------------


@pytest.mark.django_db
def test_no_api_response_holds_a_selfie_path_or_url(funded_alice, alice_client, anonymous_client):
    upload = io.BytesIO(fixture_bytes())
    upload.name = "my-own-face.jpg"
    created = alice_client.post("/api/v1/sessions/", {"selfie": upload}, format="multipart")
    session = SelfieSession.objects.get(pk=created.json()["id"])
    avatar = alice_client.post(
        "/api/v1/avatars/", {"session": str(session.pk), "style": "comic"}, format="json"
    )
    finish_with_image(Avatar.objects.get(pk=avatar.json()["id"]))
    responses = [
        created,
        avatar,
        alice_client.get(f"/api/v1/sessions/{session.pk}/"),
        alice_client.get("/api/v1/avatars/"),
        alice_client.get(f"/api/v1/avatars/{avatar.json()['id']}/"),
        alice_client.get(f"/api/v1/avatars/?session={session.pk}"),
        alice_client.get("/api/v1/credits/"),
    ]
    selfie_name = session.selfie.name
    selfie_token = selfie_name.rsplit("/", 1)[-1].split(".")[0]

    for response in responses:
        assert response.status_code in (200, 201, 202), response.content
        text = response.content.decode()
        assert selfie_name not in text and selfie_token not in text
        assert "selfies/" not in text and "/media/" not in text
        assert "my-own-face" not in text
    # MEDIA_URL is not served at all: knowing the stored name is not enough.
    assert anonymous_client.get(f"/media/{selfie_name}").status_code == 404
    assert alice_client.get(f"/media/{selfie_name}").status_code == 404


# --- logs ------------------------------------------------------------------------------------

LOGGERS = ["avatars", "credits", "celery", "httpx", "httpcore", "replicate", "django", "config"]


@pytest.mark.django_db(transaction=True)
def test_generations_and_erasure_log_no_personal_data_or_secrets(pipeline, caplog, settings):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    user = get_user_model().objects.create_user(
        username="zelda.quokka",
        email="zelda.quokka@private.example",
        password="zelda-password-1",
    )
    credit_services.grant_credits(user=user, amount=5)
    client = _client_for(user)
    selfie = fixture_bytes()
    upload = io.BytesIO(selfie)
    upload.name = "Zelda Quokka passport 1987.jpg"
    session_id = client.post("/api/v1/sessions/", {"selfie": upload}, format="multipart").json()[
        "id"
    ]

    def generate() -> dict:
        response = client.post(
            "/api/v1/avatars/", {"session": session_id, "style": "comic"}, format="json"
        )
        assert response.status_code == 202, response.content
        return wait_until_finished(client, response.json()["id"])

    succeeded = generate()
    pipeline.content_policy()
    refused = generate()
    pipeline.http_errors(503, count=3, on="create")
    unavailable = generate()
    assert client.get(succeeded["image_url"]).status_code == 200
    assert client.delete(f"/api/v1/sessions/{session_id}/").status_code == 204

    assert succeeded["status"] == "succeeded", succeeded
    assert refused["error"]["code"] == "content_policy"
    assert unavailable["error"]["code"] == "provider_unavailable"
    messages = [record.getMessage() for record in caplog.records]
    # The worker's threads were heard: the test would prove nothing otherwise.
    assert f"avatar {succeeded['id']} succeeded on attempt 1" in messages
    assert any(m.startswith(f"avatar {refused['id']} failed: content_policy") for m in messages)
    assert any("HTTP Request: POST" in m for m in messages), "httpx logs at DEBUG/INFO"
    assert any(f"user {user.pk}" in m for m in messages), "users appear by their id"
    # Everything a formatter could print, JSON extras included.
    logged = caplog.text + "\n".join(messages + [repr(vars(r)) for r in caplog.records])
    forbidden = {
        "e-mail": user.email,
        "e-mail local part": "zelda.quokka@",
        "username": user.username,
        "file name": upload.name,
        "file name stem": "passport 1987",
        "OpenAI key": PIPELINE_SETTINGS["OPENAI_API_KEY"],
        "Replicate token": settings.REPLICATE_API_TOKEN,
        "webhook secret": settings.REPLICATE_WEBHOOK_SECRET,
        "webhook secret body": settings.REPLICATE_WEBHOOK_SECRET.removeprefix("whsec_"),
        "selfie bytes": base64.b64encode(selfie[:600]).decode()[200:300],
        "a data URI": "data:image/",
    }
    if len(settings.SECRET_KEY) >= 8:
        forbidden["Django secret key"] = settings.SECRET_KEY
    leaks = [what for what, value in forbidden.items() if value and value in logged]
    assert not leaks, f"logged: {leaks}"
