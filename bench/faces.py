"""The face check's time per upload (avatars/faces.py), on photos of the sizes people send.

Each photo is prepared as an upload is (validated, turned upright, at most 2048 px, re-encoded)
and then checked `repeats` times in this process; the figure is the check alone, which is what
an upload pays on top of what it paid before.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from avatars import faces
from avatars.selfies import prepare_selfie
from tests.avatars import selfie_corpus as corpus

MIN_FRACTION = 0.15
CASES: dict[str, Callable[[], bytes]] = {
    "portrait 512x512": corpus.fixture_bytes,
    "phone photo 4032x3024 (stored at 2048x1536)": lambda: corpus.encode(
        corpus.fixture_image((4032, 3024)), "JPEG", quality=90
    ),
    "portrait turned by its EXIF tag": corpus.portrait_rotated_by_exif,
    "two people side by side": corpus.two_portraits_side_by_side,
    "small face on a 1024x1024 canvas": corpus.small_face_on_a_large_canvas,
    "landscape, no face": corpus.landscape,
}


def run_stage(repeats: int = 15) -> dict:
    rows = []
    for name, make in CASES.items():
        prepared = prepare_selfie(
            make(), max_bytes=10 << 20, min_side=256, max_pixels=40_000_000, stored_max_side=2048
        )
        faces.check_faces(prepared.content, min_fraction=MIN_FRACTION)  # the cascade loads once
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = faces.check_faces(prepared.content, min_fraction=MIN_FRACTION)
            times.append((time.perf_counter() - started) * 1000)
        rows.append(
            {
                "case": name,
                "stored": f"{prepared.width}x{prepared.height}",
                "status": result.status,
                "median_ms": statistics.median(times),
                "max_ms": max(times),
            }
        )
    return {"repeats": repeats, "rows": rows}
