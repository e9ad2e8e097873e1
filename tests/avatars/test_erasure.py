"""Erasure of a session and of all a user's data (issue 9, item 2)."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from PIL import Image

from avatars import errors, replicate_client
from avatars.cleanup import forget_leftover_uploads
from avatars.erasure import ErasureResult, erase_session, erase_user_data
from avatars.models import Avatar, Prediction, SelfieSession
from credits import services as credit_services
from credits.models import Compensation
from replicate_simulator.testing import wait_for
from tests.avatars.selfie_corpus import encode
from tests.avatars.test_pipeline import ledger_for, wait_until_finished
from tests.avatars.test_privacy import finish_with_image
from tests.avatars.test_recovery import make_avatar


def stored_files(settings) -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    if not root.exists():
        return set()
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def large_selfie_upload() -> io.BytesIO:
    """A selfie too big for a data URI, so it goes through Replicate's Files API."""
    noisy = Image.effect_noise((1400, 1400), 120).convert("RGB")
    upload = io.BytesIO(encode(noisy, "JPEG", quality=95))
    upload.name = "holiday.jpg"
    return upload


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=5)
    return alice


# --- across processes ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_deleting_a_session_erases_its_files_everywhere_and_refunds_the_running_generation(
    pipeline, funded_alice, alice_client, bob_client, settings
):
    # Given a session with a finished avatar and a running one, both fed through the Files API
    created = alice_client.post(
        "/api/v1/sessions/", {"selfie": large_selfie_upload()}, format="multipart"
    )
    session_id = created.json()["id"]

    def generate() -> dict:
        response = alice_client.post(
            "/api/v1/avatars/",
            # noise has no face: used anyway, as the page's "Use this photo anyway" does
            {"session": session_id, "style": "comic", "confirm": True},
            format="json",
        )
        assert response.status_code == 202, response.content
        return response.json()

    finished = wait_until_finished(alice_client, generate()["id"])
    assert finished["status"] == "succeeded", finished
    pipeline.hang()
    running = generate()
    wait_for(
        lambda: Prediction.objects.filter(avatar_id=running["id"]).exists(),
        timeout=10,
        message="the running avatar's prediction",
    )
    session = SelfieSession.objects.get(pk=session_id)
    # the finished one's upload went (and its id was forgotten) when its prediction ended
    uploads = {uploaded["id"] for uploaded in pipeline.files()["files"]}
    assert len(uploads) == 2, "both selfies went through /v1/files"
    assert list(
        Prediction.objects.filter(avatar_id=running["id"]).values_list("input_file_id", flat=True)
    ) == list(uploads - {d["file_id"] for d in pipeline.files()["deletions"]})
    our_files = {session.selfie.name, Avatar.objects.get(pk=finished["id"]).image.name}
    assert our_files <= stored_files(settings)

    # Someone else can not erase it
    assert bob_client.delete(f"/api/v1/sessions/{session_id}/").status_code == 404
    assert our_files <= stored_files(settings)

    # When its owner deletes it
    response = alice_client.delete(f"/api/v1/sessions/{session_id}/")

    # Then our storage holds none of its files
    assert response.status_code == 204
    assert stored_files(settings) == set()

    # and Replicate deleted both uploaded selfies: the finished one's when its prediction
    # ended, the running one's when its generation was canceled
    def deleted_uploads() -> list[str] | None:
        deleted = [d["file_id"] for d in pipeline.files()["deletions"]]
        return deleted if uploads <= set(deleted) else None

    deleted = wait_for(deleted_uploads, timeout=10, message="both uploads deleted")
    assert sorted(deleted) == sorted(uploads)
    file_deletes = pipeline.requests(method="DELETE")
    assert {f"/v1/files/{file_id}" for file_id in uploads} <= {r["path"] for r in file_deletes}
    # and the running generation was canceled at Replicate and refunded once
    canceled = alice_client.get(f"/api/v1/avatars/{running['id']}/").json()
    assert canceled["status"] == "canceled"
    assert canceled["error"]["code"] == errors.CANCELED.code
    assert canceled["refund"] == {"status": "refunded", "amount": 1}
    prediction_id = Prediction.objects.get(avatar_id=running["id"]).prediction_id
    assert pipeline.requests(method="POST", path=f"/v1/predictions/{prediction_id}/cancel")
    assert ledger_for(running["id"]) == [("spend", -1), ("refund", 1)]
    assert ledger_for(finished["id"]) == [("spend", -1)]
    assert credit_services.get_balance(user=funded_alice) == 4
    # and the rows the ledger points at hold nothing personal any more
    session.refresh_from_db()
    assert (session.selfie.name, session.selfie_sha256) == ("", "")
    assert session.selfie_deleted_at is not None
    for avatar in Avatar.objects.filter(session=session):
        assert (avatar.image.name, avatar.image_sha256, avatar.error_detail) == ("", "", "")
        assert avatar.idempotency_key == ""
    for prediction in Prediction.objects.filter(avatar__session=session):
        assert (prediction.output_url, prediction.input_file_id, prediction.error) == ("", "", "")
    body = alice_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert body["selfie_deleted"] is True
    assert [a["image_url"] for a in body["avatars"]] == [None, None]

    # A second DELETE is harmless: 204, and nothing is refunded twice
    assert alice_client.delete(f"/api/v1/sessions/{session_id}/").status_code == 204
    assert ledger_for(running["id"]) == [("spend", -1), ("refund", 1)]
    assert Compensation.objects.filter(reference=f"avatar:{running['id']}").count() == 1
    # and the erased selfie can not be used again
    again = alice_client.post(
        "/api/v1/avatars/", {"session": session_id, "style": "comic"}, format="json"
    )
    assert again.status_code == 410
    call_command("check_ledger")


# --- the API ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_account_data_erases_every_session_of_the_user_and_no_one_elses(
    funded_alice, alice_client, bob, settings
):
    finished = finish_with_image(make_avatar(funded_alice))
    queued = make_avatar(funded_alice)
    other_session = make_avatar(funded_alice).session
    credit_services.grant_credits(user=bob, amount=1)
    bobs = finish_with_image(make_avatar(bob))
    bobs_files = {bobs.session.selfie.name, bobs.image.name}

    response = alice_client.delete("/api/v1/account/data/")

    assert response.status_code == 204
    assert stored_files(settings) == bobs_files
    assert not SelfieSession.objects.filter(owner=funded_alice).exclude(selfie="").exists()
    assert SelfieSession.objects.get(pk=other_session.pk).selfie_deleted_at is not None
    queued.refresh_from_db()
    assert (queued.status, queued.error_code) == ("canceled", "canceled")
    assert ledger_for(str(queued.pk)) == [("spend", -1), ("refund", 1)]
    assert ledger_for(str(finished.pk)) == [("spend", -1)]
    assert alice_client.delete("/api/v1/account/data/").status_code == 204
    assert ledger_for(str(queued.pk)) == [("spend", -1), ("refund", 1)]
    call_command("check_ledger")


@pytest.mark.django_db
def test_an_anonymous_client_can_erase_nothing(alice_avatar_session, anonymous_client, settings):
    before = stored_files(settings)

    session_response = anonymous_client.delete(f"/api/v1/sessions/{alice_avatar_session.pk}/")
    account_response = anonymous_client.delete("/api/v1/account/data/")

    assert (session_response.status_code, account_response.status_code) == (401, 401)
    assert session_response.json()["error"]["code"] == "not_authenticated"
    assert before and stored_files(settings) == before


@pytest.fixture
def alice_avatar_session(funded_alice) -> SelfieSession:
    return finish_with_image(make_avatar(funded_alice)).session


@pytest.mark.django_db
def test_another_users_or_an_unknown_session_is_not_found(
    alice_avatar_session, bob_client, settings
):
    before = stored_files(settings)

    theirs = bob_client.delete(f"/api/v1/sessions/{alice_avatar_session.pk}/")
    unknown = bob_client.delete(f"/api/v1/sessions/{uuid.uuid4()}/")

    assert (theirs.status_code, unknown.status_code) == (404, 404)
    assert theirs.json()["error"]["code"] == "not_found"
    assert stored_files(settings) == before
    assert SelfieSession.objects.get(pk=alice_avatar_session.pk).selfie_deleted_at is None


# --- the services ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_staff_service_reports_what_it_erased_and_logs_ids_only(
    funded_alice, admin_user, caplog
):
    finish_with_image(make_avatar(funded_alice))
    make_avatar(funded_alice)
    caplog.set_level(logging.INFO, logger="avatars")

    result = erase_user_data(user=funded_alice, actor=admin_user)

    assert result == ErasureResult(sessions=2, generations_canceled=1, files_deleted=3)
    assert f"user {funded_alice.pk}" in caplog.text
    assert f"staff user {admin_user.pk}" in caplog.text
    assert funded_alice.username not in caplog.text
    assert erase_user_data(user=funded_alice) == ErasureResult(sessions=2)


@pytest.mark.django_db
def test_erasure_asks_replicate_nothing_and_the_cleanup_deletes_what_is_left(
    funded_alice, monkeypatch, caplog
):
    avatar = make_avatar(funded_alice, status="failed", attempts=2)
    Prediction.objects.create(avatar=avatar, number=1, prediction_id="p-1", input_file_id="f-1")
    Prediction.objects.create(avatar=avatar, number=2, prediction_id="p-2", input_file_id="f-2")
    calls: list[str] = []
    outage = {"f-2": 503}

    def delete_file(file_id: str) -> None:
        calls.append(file_id)
        status = outage.get(file_id) or (404 if file_id == "f-1" else None)
        if status:
            raise replicate_client.ReplicateCallError(
                f"HTTP {status}", kind=errors.PROVIDER_UNAVAILABLE, retryable=True, status=status
            )

    monkeypatch.setattr(replicate_client, "delete_file", delete_file)

    erase_session(owner=funded_alice, session_id=avatar.session_id)
    assert calls == [], "no call to Replicate inside the erasure"

    # f-1 was already gone (404: as good as deleted); f-2 met an outage and is kept to retry
    assert forget_leftover_uploads() == 1
    assert dict(Prediction.objects.values_list("prediction_id", "input_file_id")) == {
        "p-1": "",
        "p-2": "f-2",
    }
    assert "could not delete Replicate file f-2" in caplog.text

    outage.clear()
    assert forget_leftover_uploads() == 1
    assert calls == ["f-1", "f-2", "f-2"]
    assert not Prediction.objects.exclude(input_file_id="").exists()
    assert forget_leftover_uploads() == 0


@pytest.mark.django_db
def test_a_storage_failure_part_way_leaves_the_names_so_a_retry_finishes(
    funded_alice, monkeypatch, settings
):
    avatar = finish_with_image(make_avatar(funded_alice))
    real_delete = FileSystemStorage.delete
    failures = [OSError("disk went away")]

    def flaky_delete(self, name: str) -> None:
        if name.startswith("avatars/") and failures:
            raise failures.pop()
        real_delete(self, name)

    monkeypatch.setattr(FileSystemStorage, "delete", flaky_delete)

    with pytest.raises(OSError):
        erase_session(owner=funded_alice, session_id=avatar.session_id)

    avatar.refresh_from_db()
    assert avatar.image.name in stored_files(settings), "still named, still findable"
    erase_session(owner=funded_alice, session_id=avatar.session_id)
    assert stored_files(settings) == set()
    avatar.refresh_from_db()
    assert avatar.image.name == ""
