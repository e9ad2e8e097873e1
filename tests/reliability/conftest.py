"""Real Celery worker and beat processes, and a real Redis, for tests that kill them.

Each test that starts processes gets a redis-server of its own (the in-process test worker and
other test runs never see its messages, and killing or flushing it touches nothing else); the
processes write to the test database and read the same media files as the test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from avatars.models import Avatar
from config.celery import app as celery_app
from credits.models import LedgerEntry
from replicate_simulator.testing import wait_for
from tests.conftest import PIPELINE_SETTINGS
from tests.network import free_port
from tests.reliability.tally import TALLY

ROOT = Path(__file__).resolve().parents[2]


class CeleryProcess:
    """One `celery` subprocess (worker or beat) in a process group of its own."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.name = args[0]
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def wait_until_ready(self, ready: str) -> None:
        wait_for(lambda: self.saw(ready), timeout=60, message=f"celery {self.name} to be ready")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.output))

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.output))

    def kill(self) -> bool:
        """kill -9 the whole process group: no shutdown, no acknowledgements. True if it ran."""
        killed = self.stop()
        TALLY.kills += killed
        return killed

    def stop(self) -> bool:
        """SIGKILL the process group if it still runs; True if it did."""
        if self.process.poll() is not None:
            return False
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        return True


def worker_arguments(queue: str) -> list[str]:
    return [
        "worker",
        "--pool=threads",
        "--concurrency=64",
        f"--queues={queue}",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--loglevel=INFO",
        f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
    ]


class RedisServer:
    """A redis-server of this test's own, so it can be killed and started again."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.directory.mkdir()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Append-only with fsync on every write, like a production Redis that keeps its queue.
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
            + ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=30, interval=0.1, message="redis-server to answer")

    def _answers(self) -> bool:
        assert self.process.poll() is None, "redis-server exited (its port taken?)"
        try:
            return redis.Redis(port=self.port).ping()
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()


def pytest_terminal_summary(terminalreporter) -> None:
    if TALLY.scenarios:
        terminalreporter.section("reliability scenarios")
        for line in TALLY.figures:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"totals: {TALLY.totals()}")


@pytest.fixture(autouse=True)
def _count_scenario(request, _django_db_helper):
    """Count each scenario, and the generations and refunds it made, before its data is gone."""
    yield
    TALLY.scenarios += 1
    if request.node.get_closest_marker("django_db"):
        TALLY.generations += Avatar.objects.filter(status__in=Avatar.TERMINAL_STATUSES).count()
        TALLY.refunds += LedgerEntry.objects.filter(kind="refund").count()


@pytest.fixture
def report():
    """Record one line of figures for the end-of-run summary."""
    return TALLY.figures.append


@pytest.fixture
def worker_queue() -> str:
    return f"test-proc-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    """A Redis of the test's own; the worker processes, beat and `send` use it."""
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def worker_redis_url(private_redis) -> str:
    return private_redis.url


@pytest.fixture
def send(worker_redis_url, worker_queue):
    """Publish a task to the worker processes' own Redis and queue."""

    def send_task(task, *args) -> None:
        with celery_app.connection_for_write(worker_redis_url) as conn:
            task.apply_async(args, queue=worker_queue, connection=conn)

    return send_task


@pytest.fixture
def worker_env(pipeline, settings, worker_queue, worker_redis_url) -> dict[str, str]:
    """The settings of the pipeline tests, as a worker process reads them: from the environment."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
        "REDIS_URL": worker_redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": worker_queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "REPLICATE_BASE_URL": pipeline.base_url,
        "REPLICATE_API_TOKEN": pipeline.token,
        "REPLICATE_WEBHOOK_SECRET": pipeline.webhook_secret,
        "AVATAR_OUTPUT_ALLOWED_HOSTS": "127.0.0.1",
        "AVATAR_OUTPUT_ALLOW_HTTP": "true",
        "AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES": "true",
        "OPENAI_API_KEY": PIPELINE_SETTINGS["OPENAI_API_KEY"],
    }
    for name in (
        "AVATAR_POLL_FIRST_DELAY",
        "AVATAR_MIN_ATTEMPT_SECONDS",
        "AVATAR_POLL_INITIAL_DELAY",
        "AVATAR_POLL_MAX_DELAY",
        "AVATAR_API_RETRY_INITIAL_DELAY",
        "AVATAR_API_RETRY_MAX_DELAY",
        "AVATAR_GENERATION_TIMEOUT",
    ):
        env[name] = str(PIPELINE_SETTINGS[name])
    return env


@pytest.fixture
def start_celery(worker_env) -> Iterator:
    """Start celery processes (with extra env); every one is stopped at the end of the test."""
    started: list[CeleryProcess] = []

    def start(args: list[str], *, ready: str, **extra: str) -> CeleryProcess:
        process = CeleryProcess(args, {**worker_env, **extra})
        started.append(process)  # stopped at the end even if it never gets ready
        process.wait_until_ready(ready)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_worker(start_celery, worker_queue):
    """Start a worker process on this test's queue (extra settings as environment variables)."""

    def start(**extra: str) -> CeleryProcess:
        return start_celery(worker_arguments(worker_queue), ready="ready", **extra)

    return start


@pytest.fixture
def start_beat(start_celery):
    """Start a celery-beat process with the production scheduler (django-celery-beat)."""

    def start(**extra: str) -> CeleryProcess:
        return start_celery(["beat", "--loglevel=INFO"], ready="beat: Starting", **extra)

    return start
