"""The face check at upload (avatars/faces.py): OpenCV's Haar cascade on the prepared selfie."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from avatars import faces
from avatars.selfies import prepare_selfie_from_settings
from tests.avatars import selfie_corpus


def checked(data: bytes) -> faces.FaceCheck:
    prepared = prepare_selfie_from_settings(data)
    return faces.check_faces(prepared.content, min_fraction=0.15)


def test_the_wheel_carries_the_frontal_face_cascade():
    assert (Path(cv2.data.haarcascades) / faces.CASCADE).is_file()
    assert int(cv2.__version__.split(".")[0]) < 5, "5.x wheels no longer carry the cascades"


@pytest.mark.parametrize(
    "make", [selfie_corpus.fixture_bytes, selfie_corpus.portrait_rotated_by_exif]
)
def test_a_portrait_passes_upright_or_turned_by_its_exif_tag(make):
    result = checked(make())

    assert (result.status, result.faces_found, result.passed) == ("ok", 1, True)
    assert 0.15 <= result.largest_share < 0.3
    assert result.message == ""


def test_two_people_side_by_side_are_several_faces():
    result = checked(selfie_corpus.two_portraits_side_by_side())

    assert (result.status, result.faces_found) == ("several_faces", 2)
    assert "more than one face" in result.message


@pytest.mark.parametrize("make", [selfie_corpus.plain_picture, selfie_corpus.landscape])
def test_a_picture_without_a_person_has_no_face(make):
    result = checked(make())

    assert (result.status, result.faces_found, result.largest_share) == ("no_face", 0, None)
    assert "could not find a face" in result.message


def test_a_small_face_on_a_large_canvas_is_too_small():
    result = checked(selfie_corpus.small_face_on_a_large_canvas())

    assert (result.status, result.faces_found) == ("face_too_small", 1)
    assert result.largest_share < 0.15


def test_the_smallest_share_allowed_is_a_setting():
    prepared = prepare_selfie_from_settings(selfie_corpus.small_face_on_a_large_canvas())

    assert faces.check_faces(prepared.content, min_fraction=0.05).status == "ok"
