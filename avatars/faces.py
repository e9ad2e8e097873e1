"""A face check before any credit moves: OpenCV's Haar frontal-face cascade on a small copy.

The cascade misses tilted and turned faces, so its verdict is a warning the person may
override, never a refusal. It runs on the stored selfie (already upright: EXIF orientation was
applied when it was prepared), decoded straight to a small grey copy (JPEG draft mode), which
keeps it to a few tens of milliseconds per upload.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

CASCADE = "haarcascade_frontalface_default.xml"
# The cascade runs on a copy whose shorter side is at most this (faces are found in proportion).
WORK_SIDE = 360
# Between the sizes of face looked for: 1.2 missed a face of 10% of the side in our fixtures.
SCALE_STEP = 1.15
# Faces smaller than this share of the shorter side are not looked for (they are noise at best).
SMALLEST_FACE_SHARE = 0.05

OK = "ok"
NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
FACE_TOO_SMALL = "face_too_small"
MESSAGES = {
    NO_FACE: "We could not find a face in this photo. The avatar is drawn from your face, so "
    "it may not look like you.",
    SEVERAL_FACES: "We found more than one face in this photo. The avatar shows one person, and "
    "it may not be the one you mean.",
    FACE_TOO_SMALL: "The face in this photo is small. A closer photo of your face gives a "
    "better likeness.",
}


@dataclass(frozen=True)
class FaceCheck:
    faces_found: int
    # The largest face's width as a share of the picture's shorter side; None without a face.
    largest_share: float | None
    status: str

    @property
    def passed(self) -> bool:
        return self.status == OK

    @property
    def message(self) -> str:
        return MESSAGES.get(self.status, "")


_local = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    """One classifier per thread: OpenCV's is not safe to share between threads."""
    if not hasattr(_local, "cascade"):
        _local.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    return _local.cascade


def _small_grey(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        scale = min(1.0, WORK_SIDE / min(image.size))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.draft("L", size)  # JPEG decodes at 1/2, 1/4 or 1/8 scale: far less work
        grey = image.convert("L")
        if min(grey.size) > WORK_SIDE:
            grey = grey.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(grey)


def check_faces(jpeg: bytes, *, min_fraction: float) -> FaceCheck:
    """Count the faces in a prepared selfie and judge the largest against `min_fraction`."""
    grey = _small_grey(jpeg)
    short = min(grey.shape)
    smallest = max(20, round(short * SMALLEST_FACE_SHARE))
    faces = _cascade().detectMultiScale(
        grey, scaleFactor=SCALE_STEP, minNeighbors=5, minSize=(smallest, smallest)
    )
    if len(faces) == 0:
        return FaceCheck(0, None, NO_FACE)
    largest = max(int(width) for _, _, width, _ in faces) / short
    if len(faces) > 1:
        status = SEVERAL_FACES
    elif largest < min_fraction:
        status = FACE_TOO_SMALL
    else:
        status = OK
    return FaceCheck(len(faces), round(largest, 3), status)
