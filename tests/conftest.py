from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.celery import app as celery_app

# The simulator's fixtures (`replicate_simulator`) for every test.
pytest_plugins = ["replicate_simulator.testing"]


def pytest_sessionstart(session):
    """The suite's promises are about PostgreSQL; refuse to run on anything else."""
    if connection.vendor != "postgresql":
        raise pytest.UsageError(
            "run the tests on PostgreSQL: DATABASE_URL=postgres://... (make test)"
        )


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _own_cache(settings):
    """Throttle counters per test, in memory: clearing the Redis cache would flush the broker."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_provider_state():
    """Each test starts with the breaker closed, a full create pace and no cached run times."""
    from avatars import breaker, generation, pacing
    from avatars.shared_state import shared_redis

    keys = [breaker.KEY, breaker.WAITING_KEY, pacing.BUCKET_KEY, pacing.QUEUE_KEY, pacing.SEEN_KEY]
    generation.forget_run_times()
    shared_redis().delete(*keys)
    yield
    shared_redis().delete(*keys)
    generation.forget_run_times()


def _make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, password=f"{username}-password-1", **extra
    )


@pytest.fixture
def alice(db):
    return _make_user("alice")


@pytest.fixture
def bob(db):
    return _make_user("bob")


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice_client(alice) -> APIClient:
    return _client_for(alice)


@pytest.fixture
def bob_client(bob) -> APIClient:
    return _client_for(bob)


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


# --- the generation pipeline across processes ------------------------------------------------


PIPELINE_SETTINGS = {
    "AVATAR_POLL_FIRST_DELAY": 0.1,
    "AVATAR_POLL_INITIAL_DELAY": 0.1,
    "AVATAR_MIN_ATTEMPT_SECONDS": 5,
    "AVATAR_POLL_MAX_DELAY": 0.3,
    "AVATAR_API_RETRY_INITIAL_DELAY": 0.05,
    "AVATAR_API_RETRY_MAX_DELAY": 0.5,
    "AVATAR_GENERATION_TIMEOUT": 20,
    "AVATAR_OUTPUT_ALLOWED_HOSTS": ["127.0.0.1"],
    "AVATAR_OUTPUT_ALLOW_HTTP": True,
    "AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES": True,
    "OPENAI_API_KEY": "sk-test-openai-key",
    "PUBLIC_BASE_URL": "",
}


# A queue of this test run's own, so no other run's messages reach our worker. Set at import,
# before anything sends a message (Celery caches its queues on first use).
TEST_QUEUE = f"test-{uuid.uuid4().hex[:12]}"
django_settings.CELERY_TASK_DEFAULT_QUEUE = TEST_QUEUE
celery_app.conf.task_default_queue = TEST_QUEUE


@pytest.fixture(scope="session")
def celery_queue():
    return TEST_QUEUE


def _purge(queue: str) -> None:
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


@pytest.fixture(scope="session")
def _session_celery_worker(celery_queue, django_db_setup, django_db_blocker):
    # Set up after the test database (django_db_setup), so stopped before it is dropped.
    # One worker for the whole run: a second embedded worker in the same process never fires
    # countdown (ETA) messages. A message left over from an earlier test finds its avatar gone
    # (the database is emptied between tests) and does nothing.
    _purge(celery_queue)
    with ExitStack() as running:
        with django_db_blocker.unblock():  # its start-up (Celery's Django fixup) reads models
            worker = running.enter_context(
                start_worker(
                    celery_app,
                    pool="threads",
                    concurrency=16,
                    perform_ping_check=False,
                    queues=[celery_queue],
                    loglevel="WARNING",
                    shutdown_timeout=15,
                )
            )
        yield worker
    _purge(celery_queue)
    with django_db_blocker.unblock():
        _close_connections_of_ended_threads()


def _close_connections_of_ended_threads() -> None:
    """The worker's threads kept their connections (CONN_MAX_AGE) when they ended: end them at
    the server, or the test database can not be dropped at the end of the run."""
    from replicate_simulator.testing import wait_for  # a plugin: imported by pytest first

    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")

        def gone() -> bool:
            cursor.execute(f"SELECT count(*) {others}")
            return cursor.fetchone()[0] == 0

        wait_for(gone, timeout=10, interval=0.05, message="the worker's connections to end")


@pytest.fixture
def celery_worker(_session_celery_worker, celery_queue):
    """A real Celery worker in threads of this process, consuming from real Redis."""
    _purge(celery_queue)
    yield _session_celery_worker
    _purge(celery_queue)


@pytest.fixture
def pipeline(transactional_db, settings, replicate_simulator, celery_worker):
    """Everything a generation crosses: PostgreSQL, Redis, a worker and the simulator."""
    for name, value in PIPELINE_SETTINGS.items():
        setattr(settings, name, value)
    settings.REPLICATE_BASE_URL = replicate_simulator.base_url
    settings.REPLICATE_API_TOKEN = replicate_simulator.token
    settings.REPLICATE_WEBHOOK_SECRET = replicate_simulator.webhook_secret
    yield replicate_simulator
    # The worker threads may still hold this test's countdown messages: make them all stale,
    # so none runs a step while the database is being emptied for the next test.
    from avatars.models import Avatar

    unfinished = Avatar.objects.filter(status__in=["queued", "running"])
    unfinished.update(poll_seq=F("poll_seq") + 1_000_000)
