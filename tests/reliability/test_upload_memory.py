"""What a maximal accepted selfie costs in memory (issue 14): a 40 MP JPEG stays under 300 MB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 300

# Writes a 40 MP JPEG (a smooth picture, so it is well under SELFIE_MAX_BYTES), turned by its
# EXIF tag, in a process of its own: drawing it costs more than reading it.
_MAKE = """
import sys
from PIL import Image
picture = Image.linear_gradient("L").resize((7744, 5164)).convert("RGB")
exif = Image.Exif()
exif[0x0112] = 6
picture.save(sys.argv[1], quality=85, exif=exif)
"""

# Prepares it as an upload is prepared, and reports its own peak resident memory: VmHWM, the
# high-water mark of this process's memory (ru_maxrss would carry over the parent's at fork).
_PREPARE = """
import json, re, sys
import django
django.setup()
from avatars.selfies import prepare_selfie_from_settings

def high_water_kb():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))

data = open(sys.argv[1], "rb").read()
before = high_water_kb()
prepared = prepare_selfie_from_settings(data)
peak = high_water_kb()
print(json.dumps({"bytes": len(data), "before_kb": before, "peak_kb": peak,
                  "size": [prepared.width, prepared.height]}))
"""


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.django_db  # the scenario tally reads the database after each test
def test_a_40_megapixel_jpeg_is_prepared_in_under_300_mb(tmp_path, settings, report):
    photo = tmp_path / "40mp.jpg"
    _run(_MAKE, str(photo))

    figures = json.loads(_run(_PREPARE, str(photo)).splitlines()[-1])

    assert figures["bytes"] <= settings.SELFIE_MAX_BYTES
    assert figures["size"] == [1366, 2048], "stored upright, scaled to the longer side"
    peak_mb = figures["peak_kb"] / 1024
    assert peak_mb < LIMIT_MB, figures
    report(
        f"uploads: a 40 MP JPEG ({figures['bytes'] / 1e6:.1f} MB) prepared at a peak RSS of"
        f" {peak_mb:.0f} MB ({figures['before_kb'] / 1024:.0f} MB before it)"
    )
