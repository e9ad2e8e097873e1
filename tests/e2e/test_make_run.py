"""`make run` as a new user meets it: the same script, every process real, nothing pre-set.

It runs scripts/run.py (what `make run` runs) with none of the service's settings in the
environment: a SQLite file in a temporary folder, the embedded Redis, the Replicate simulator.
Then one avatar is made through the API, the staff reviewer signs in to /admin/, and Ctrl-C
(SIGINT to the process group, as a terminal sends it) must stop every process it started.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest
from PIL import Image

from replicate_simulator.testing import wait_for
from tests.network import free_port

ROOT = Path(__file__).resolve().parents[2]
SELFIE = ROOT / "tests" / "fixtures" / "selfie-astronaut.jpg"
T = TypeVar("T")

pytestmark = pytest.mark.timeout(180)

# What a fresh clone has none of: every setting of the service, and what make test exports.
SETTINGS_PREFIXES = (
    "DJANGO_",
    "DATABASE_URL",
    "REDIS_URL",
    "REPLICATE_",
    "OPENAI_",
    "PUBLIC_BASE_URL",
    "AVATAR_",
    "SELFIE_",
    "CELERY_",
    "CREDITS_",
    "MEDIA_ROOT",
    "LOG_LEVEL",
    "SIMULATOR_",
    "DEMO_PASSWORD",
    "REVIEWER_PASSWORD",
    "PORT",
)


class RunOutput:
    """Everything `make run` prints, read by a thread so the pipe never fills up."""

    def __init__(self, stream: io.TextIOBase, log_path: Path) -> None:
        self.lines: list[str] = []
        self._log = log_path.open("w")
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.append(line)
            self._log.write(line)
            self._log.flush()

    def find(self, pattern: str) -> re.Match | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def close(self) -> None:
        self._thread.join(timeout=5)
        self._log.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture
def make_run(tmp_path, artifacts_dir) -> Iterator[dict]:
    """scripts/run.py in its own process group, on free ports, with its state in tmp_path."""
    web_port, simulator_port = free_port(), free_port()
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(SETTINGS_PREFIXES)
    }
    env.update(
        MEDIA_ROOT=str(tmp_path / "media"),
        # The simulator's default is 10 s, to watch progress; a test has no need to wait.
        SIMULATOR_LATENCY="1",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/run.py",
            "--port",
            str(web_port),
            "--simulator-port",
            str(simulator_port),
            "--sqlite",
            str(tmp_path / "db.sqlite3"),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = RunOutput(process.stdout, artifacts_dir / "make-run.log")
    seen: dict[int, psutil.Process] = {}
    handle = {
        "process": process,
        "output": output,
        "url": f"http://127.0.0.1:{web_port}",
        "seen": seen,
    }
    try:
        yield handle
    finally:
        # Whatever happened, nothing may outlive the test: the group, then every descendant
        # seen (honcho starts each process in a session of its own).
        seen.update({p.pid: p for p in _descendants(process.pid)})
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for child in _alive(list(seen.values())):
            child.kill()
        process.wait(timeout=10)
        output.close()


def test_make_run_serves_an_avatar_end_to_end_and_stops_cleanly_on_ctrl_c(make_run):
    process, output, url = make_run["process"], make_run["output"], make_run["url"]
    started = time.monotonic()

    # Ready: web, worker, beat, embedded Redis and the simulator, on a database of its own
    def ready() -> bool:
        assert process.poll() is None, f"make run exited with {process.returncode}"
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=120, message="/readyz")
    demo = output.find(r"demo user: +demo / (\S+)")
    reviewer = output.find(r"staff reviewer: +reviewer / (\S+)")
    assert demo and reviewer, "the credentials were not printed"

    # One avatar through the API, as the demo user with 10 credits
    with httpx.Client(base_url=url, timeout=20) as client:
        token = client.post(
            "/api/v1/auth/token/", json={"username": "demo", "password": demo.group(1)}
        ).json()["token"]
        client.headers["Authorization"] = f"Token {token}"
        assert client.get("/api/v1/credits/").json()["balance"] == 10
        session = client.post(
            "/api/v1/sessions/", files={"selfie": ("selfie.jpg", SELFIE.read_bytes())}
        )
        assert session.status_code == 201, session.text
        created = client.post(
            "/api/v1/avatars/", json={"session": session.json()["id"], "style": "comic"}
        )
        assert created.status_code == 202, created.text
        avatar_id = created.json()["id"]

        def finished() -> dict | None:
            avatar = client.get(f"/api/v1/avatars/{avatar_id}/").json()
            return avatar if avatar["status"] not in {"queued", "running"} else None

        avatar = wait_for(finished, timeout=60, message="the avatar to finish")
        assert avatar["status"] == "succeeded", avatar
        image = client.get(avatar["image_url"])
        assert image.status_code == 200
        assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)
        assert client.get("/api/v1/credits/").json()["balance"] == 9

    # The staff reviewer gets into /admin/
    with httpx.Client(base_url=url, timeout=20, follow_redirects=True) as admin:
        admin.get("/admin/login/")
        signed_in = admin.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "reviewer",
                "password": reviewer.group(1),
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{url}/admin/login/"},
        )
        assert signed_in.status_code == 200
        assert str(signed_in.url).rstrip("/").endswith("/admin")
        assert "Site administration" in signed_in.text

    # Every process spoke through honcho, in one terminal
    for name in ("web", "worker", "beat", "redis", "simulator"):
        pattern = rf"\b{name}\.1 +\| "
        wait_for(lambda p=pattern: output.find(p), timeout=30, message=f"{name}'s output")

    # Ctrl-C: every process it started stops, and it exits cleanly
    children = _descendants(process.pid)
    make_run["seen"].update({p.pid: p for p in children})
    names = " ".join(" ".join(p.cmdline()) for p in _alive(children))
    for program in ("honcho", "runserver", "celery", "beat", "redis-server", "replicate_simulator"):
        assert program in names, f"{program} is not running"
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert _alive(alive) == [], [" ".join(p.cmdline()) for p in _alive(alive)]
    print(f"make run: ready, one avatar and a clean stop in {time.monotonic() - started:.1f} s")
