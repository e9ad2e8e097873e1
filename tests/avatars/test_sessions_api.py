from __future__ import annotations

import io
import os
from unittest.mock import patch

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from avatars import api as avatars_api
from avatars.models import SelfieSession
from tests.avatars.selfie_corpus import (
    BAD_FILES,
    CorpusFile,
    corpus_id,
    fixture_bytes,
    good_jpeg_with_gps_exif,
)


def _upload(client, corpus_file: CorpusFile):
    return client.post(
        "/api/v1/sessions/",
        {"selfie": _named_file(corpus_file)},
        format="multipart",
    )


def _named_file(corpus_file: CorpusFile) -> io.BytesIO:
    upload = io.BytesIO(corpus_file.data)
    upload.name = corpus_file.filename
    return upload


def _stored_files(settings) -> list:
    root = settings.MEDIA_ROOT
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_good_selfie_makes_a_session(alice_client, settings):
    response = _upload(alice_client, CorpusFile("me.jpg", fixture_bytes(), None))

    assert response.status_code == 201, response.json()
    body = response.json()
    session = SelfieSession.objects.get(pk=body["id"])
    assert session.owner.username == "alice"
    assert (body["selfie_width"], body["selfie_height"]) == (512, 512)
    assert body["avatars"] == []
    assert body["selfie_deleted"] is False
    assert "selfie" not in body and "me.jpg" not in str(body)
    assert len(_stored_files(settings)) == 1


def test_the_stored_copy_has_no_exif_and_an_unguessable_name(alice_client):
    corpus_file = good_jpeg_with_gps_exif()

    response = _upload(alice_client, corpus_file)

    assert response.status_code == 201, response.json()
    session = SelfieSession.objects.get(pk=response.json()["id"])
    assert corpus_file.filename not in session.selfie.name
    assert len(session.selfie.name.split("/")[-1].split(".")[0]) == 32
    with default_storage.open(session.selfie.name) as stored:
        image = Image.open(stored)
        image.load()
    assert not image.getexif()
    assert "exif" not in image.info
    assert image.size == (300, 600), "EXIF orientation was applied before it was dropped"


@pytest.mark.parametrize("make", BAD_FILES, ids=corpus_id)
def test_a_bad_file_is_refused_and_nothing_is_stored(alice_client, settings, make):
    corpus_file = make()

    response = _upload(alice_client, corpus_file)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_selfie"
    assert error["fields"]["reason"] == corpus_file.expected_reason
    assert error["message"].endswith(".") and "Traceback" not in error["message"]
    assert not SelfieSession.objects.exists()
    assert _stored_files(settings) == []


def test_a_missing_selfie_field_is_a_validation_error(alice_client):
    response = alice_client.post("/api/v1/sessions/", {}, format="multipart")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "selfie" in response.json()["error"]["fields"]


def test_the_owner_sees_their_session(alice_client):
    created = _upload(alice_client, CorpusFile("me.jpg", fixture_bytes(), None)).json()

    response = alice_client.get(f"/api/v1/sessions/{created['id']}/")

    assert response.status_code == 200
    assert response.json()["id"] == created["id"]


def test_another_user_gets_404_for_someone_elses_session(alice_client, bob_client):
    created = _upload(alice_client, CorpusFile("me.jpg", fixture_bytes(), None)).json()

    response = bob_client.get(f"/api/v1/sessions/{created['id']}/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_session_is_404(alice_client):
    response = alice_client.get("/api/v1/sessions/00000000-0000-0000-0000-000000000000/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_upload_is_never_written_to_a_temporary_file(alice_client, settings, tmp_path):
    # Given a temporary directory for uploads, and a selfie larger than Django keeps in memory
    # by default (2.5 MB): a killed web worker would leave such a file behind
    temporary = tmp_path / "uploads"
    temporary.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temporary)
    noise = Image.frombytes("RGB", (1100, 1100), os.urandom(1100 * 1100 * 3))
    big = io.BytesIO()
    noise.save(big, format="PNG")
    assert 2_621_440 < len(big.getvalue()) < settings.SELFIE_MAX_BYTES
    seen_while_preparing = []
    prepare = avatars_api.prepare_selfie_from_settings

    def watch(data: bytes):
        seen_while_preparing.append(sorted(p.name for p in temporary.iterdir()))
        return prepare(data)

    # When it is uploaded
    with patch.object(avatars_api, "prepare_selfie_from_settings", watch):
        response = _upload(alice_client, CorpusFile("big.png", big.getvalue(), None))

    # Then it was read from memory: no file was there while the view had it, nor after
    assert response.status_code == 201, response.content
    assert seen_while_preparing == [[]]
    assert list(temporary.iterdir()) == []
