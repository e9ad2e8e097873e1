"""PostgreSQL databases and the Redis database of a benchmark run, and the service's environment.

Every benchmark gets a database of its own (`bench_avatars_<stage>`), copied from a template
migrated once per run and dropped afterwards, so nothing touches the test suite's
`test_avatar_service` or anyone's development data. Redis: one database number (15 by default),
refused if it holds keys that are not ours, flushed between stages and at the end.
"""

from __future__ import annotations

import base64
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg2
import redis

from bench.procs import ROOT

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
TEMPLATE_DB = "bench_avatars_template"
QUEUE = "bench"
SECRET_KEY = "bench-only-secret-key-not-for-production"
SIMULATOR_TOKEN = "r8_bench-token"
# Keys a bench run leaves in its Redis database (Celery's, the probe's, the service's create
# pace and breaker); anything else means someone else uses the database, and we refuse to
# flush it.
# `--conn-max-age`: Django database options added to the service's DATABASE_URL (a what-if).
EXPERIMENT_DB_OPTIONS = ""
OUR_KEY_PREFIXES = (
    "bench",
    "_kombu.",
    "unacked",
    "avatars:metrics:",
    "avatars:pacing:",
    "avatars:breaker",
    "avatars-cache",
)


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class Postgres:
    """Creates and drops the run's databases on one PostgreSQL server."""

    server_url: str = DEFAULT_SERVER_URL

    def connect(self, name: str | None = None):
        url = database_url(self.server_url, name) if name else self.server_url
        connection = psycopg2.connect(url)
        connection.autocommit = True
        return connection

    def execute(self, sql: str, name: str | None = None) -> None:
        connection = self.connect(name)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_template(self, env: dict[str, str]) -> None:
        """Migrate once; each stage then copies the template (much faster than migrating)."""
        self.drop(TEMPLATE_DB)
        self.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        migrate_env = {**env, "DATABASE_URL": database_url(self.server_url, TEMPLATE_DB)}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=migrate_env,
            check=True,
        )

    def fresh(self, name: str) -> str:
        """A new database copied from the template; returns its URL."""
        self.drop(name)
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        return database_url(self.server_url, name)

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        url = self.fresh(name)
        try:
            yield url
        finally:
            self.drop(name)

    def version(self) -> str:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                return cursor.fetchone()[0]
        finally:
            connection.close()


class RedisDb:
    """The run's Redis database number: checked to be ours, flushed between stages."""

    def __init__(self, url: str = DEFAULT_REDIS_URL) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)

    def check_ours(self) -> None:
        foreign = [
            key.decode(errors="replace")
            for key in self.client.scan_iter(count=1000)
            if not key.decode(errors="replace").startswith(OUR_KEY_PREFIXES)
        ]
        if foreign:
            raise SystemExit(
                f"bench: Redis database {self.url} holds keys that are not the bench's "
                f"(e.g. {foreign[:3]}); choose another with --redis-url"
            )

    def flush(self) -> None:
        self.client.flushdb()

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def service_env(
    *,
    database_url: str,
    redis_url: str,
    media_root: Path,
    replicate_base_url: str = "http://127.0.0.1:9",
    webhook_secret: str = "",
    public_base_url: str = "",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every service process: production settings, bench plumbing."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "AVATAR_", "REPLICATE_", "CELERY_", "SELFIE_", "THROTTLE_")
        )
        and key not in {"DATABASE_URL", "REDIS_URL", "CACHE_URL", "PUBLIC_BASE_URL", "MEDIA_ROOT"}
    }
    env.update(
        {
            # bench.settings = config.settings plus the probe (query counts, countdown
            # lateness) and the baseline task.
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DJANGO_SECRET_KEY": SECRET_KEY,
            "DJANGO_DEBUG": "false",
            "DATABASE_URL": database_url
            + (f"?{EXPERIMENT_DB_OPTIONS}" if EXPERIMENT_DB_OPTIONS else ""),
            "REDIS_URL": redis_url,
            "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
            "REPLICATE_API_TOKEN": SIMULATOR_TOKEN,
            "REPLICATE_BASE_URL": replicate_base_url,
            "REPLICATE_WEBHOOK_SECRET": webhook_secret,
            "OPENAI_API_KEY": "sk-bench-placeholder",
            "PUBLIC_BASE_URL": public_base_url,
            "AVATAR_OUTPUT_ALLOW_HTTP": "true",
            "AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES": "true",
            "AVATAR_OUTPUT_ALLOWED_HOSTS": "127.0.0.1",
            "MEDIA_ROOT": str(media_root),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra or {})
    return env


def machine() -> dict[str, str]:
    """What the figures were measured on; a busy machine explains slow figures."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cores": f"{psutil.cpu_count(logical=True)} logical ({model or platform.machine()})",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{head}{' + uncommitted changes' if dirty else ''}"
    except OSError:
        return "?"
