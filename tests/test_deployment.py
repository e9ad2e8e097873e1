"""Deployment files: Procfile, Procfile.dev, docker-compose.yml, Dockerfile, `make run`'s plan.

Docker does not run on our machines, so the files are parsed and every command they name is
checked to exist here: the program, its subcommand, its options (against its own --help), the
modules and classes it loads.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve
from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _load_run_script():
    spec = importlib.util.spec_from_file_location("make_run_script", ROOT / "scripts" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run_script = _load_run_script()


@functools.cache
def _help(*command: str) -> str:
    """A program's own --help: the truth about which subcommands and options it has."""
    result = subprocess.run(
        [*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed: {result.stderr}"
    return result.stdout


def _options(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("-") and word != "-"]


def check_command(command: str | list[str]) -> None:
    """Fail unless the program, subcommand, options and loaded modules all exist."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    program, args = words[0], words[1:]
    if program == "python":
        if args[:1] == ["manage.py"]:
            assert args[1] in get_commands(), f"no management command {args[1]!r}"
            help_text = _help(sys.executable, "manage.py", args[1])
        elif args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]), f"no module {args[1]!r}"
            help_text = _help(sys.executable, "-m", args[1])
            args = args[2:]
        elif args[:1] == ["-c"]:
            compile(args[1], "<healthcheck>", "exec")
            return
        else:
            raise AssertionError(f"unexpected python command: {words}")
    elif program == "gunicorn":
        module, _, name = args[0].partition(":")
        assert hasattr(importlib.import_module(module), name or "application")
        help_text = _help(str(BIN / "gunicorn"))
    elif program == "celery":
        assert args[:2] == ["-A", "config"], words
        assert importlib.import_module("config.celery").app
        subcommand = args[2]
        help_text = _help(str(BIN / "celery"), "-A", "config", subcommand)
        args = args[3:]
        if "--scheduler" in args:
            path = args[args.index("--scheduler") + 1]
            module, _, name = path.partition(":")
            assert hasattr(importlib.import_module(module), name), path
    else:
        raise AssertionError(f"unknown program {program!r} in {words}")
    for option in _options(args):
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", help_text), (
            f"{program} has no option {option}"
        )


# --- Procfile -----------------------------------------------------------------------------


def _procfile(name: str) -> dict[str, str]:
    procfile = parse_procfile((ROOT / name).read_text())
    return dict(procfile.processes)


def test_procfile_has_release_web_worker_and_beat_whose_commands_exist():
    processes = _procfile("Procfile")

    assert set(processes) == {"release", "web", "worker", "beat"}
    for command in processes.values():
        check_command(command)
    assert processes["release"] == "python manage.py migrate --noinput"
    assert "django_celery_beat.schedulers:DatabaseScheduler" in processes["beat"]
    assert "${PORT" in processes["web"]


def test_procfile_dev_has_every_make_run_process_and_only_variables_run_sets():
    processes = _procfile("Procfile.dev")
    plan = run_script.make_plan(_run_args(), {"PATH": "/usr/bin"})

    assert set(processes) == {"web", "worker", "beat", "redis", "simulator"}
    assert plan.processes == ["web", "worker", "beat", "redis", "simulator"]
    for name, command in processes.items():
        variables = set(re.findall(r"\$\{?(\w+)", command))
        assert variables <= set(plan.env), f"{name} uses unset {variables - set(plan.env)}"
        if name != "redis":
            expanded = re.sub(r'"?\$\{?(\w+)\}?"?', lambda m: plan.env[m.group(1)], command)
            check_command(expanded)
    version = subprocess.run(
        [plan.env["EMBEDDED_REDIS_SERVER"], "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith("Redis server v=")


# --- make run's plan ----------------------------------------------------------------------


def _run_args(**overrides) -> Namespace:
    values = {
        "host": "127.0.0.1",
        "port": 8000,
        "sqlite": "/tmp/run-test/db.sqlite3",
        "redis_port": 6390,
        "simulator_port": 8790,
    }
    return Namespace(**{**values, **overrides})


def test_fresh_clone_gets_sqlite_embedded_redis_and_the_simulator_wired_up():
    plan = run_script.make_plan(_run_args(), {"PATH": "/usr/bin"})
    env = plan.env

    assert env["DJANGO_DEBUG"] == "true"
    assert env["DATABASE_URL"].startswith("sqlite:////tmp/run-test/db.sqlite3?")
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert env["REPLICATE_BASE_URL"] == "http://127.0.0.1:8790"
    assert env["REPLICATE_API_TOKEN"]
    assert env["OPENAI_API_KEY"]
    # The simulator signs its webhooks with the secret the service checks them with.
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", env["REPLICATE_WEBHOOK_SECRET"])
    assert env["SIMULATOR_WEBHOOK_SECRET"] == env["REPLICATE_WEBHOOK_SECRET"]
    assert env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert env["AVATAR_OUTPUT_ALLOW_HTTP"] == "true"
    assert env["AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES"] == "true"
    assert "127.0.0.1" in env["AVATAR_OUTPUT_ALLOWED_HOSTS"].split(",")
    assert env["PATH"].startswith(f"{BIN}:")


def test_with_redis_and_a_real_token_run_starts_neither_and_changes_no_replicate_setting():
    given = {
        "PATH": "/usr/bin",
        "DJANGO_SECRET_KEY": "a-real-secret",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/avatars",
        "REDIS_URL": "redis://127.0.0.1:6379/3",
        "REPLICATE_API_TOKEN": "r8_real",
        "OPENAI_API_KEY": "sk-real",
    }

    plan = run_script.make_plan(_run_args(), given)

    assert plan.processes == ["web", "worker", "beat"]
    assert "DJANGO_DEBUG" not in plan.env
    for name, value in given.items():
        if name != "PATH":
            assert plan.env[name] == value
    for name in (
        "REPLICATE_BASE_URL",
        "PUBLIC_BASE_URL",
        "AVATAR_OUTPUT_ALLOW_HTTP",
        "AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES",
    ):
        assert name not in plan.env


def test_webhooks_reach_the_dev_server_when_it_listens_on_every_interface():
    plan = run_script.make_plan(_run_args(host="0.0.0.0", port=8123), {"PATH": "/usr/bin"})

    assert plan.env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8123"
    assert plan.env["WEB_ADDRESS"] == "0.0.0.0:8123"


def test_makefile_run_target_runs_the_script_after_installing():
    # Not the flags of a `make` this suite may run under (make test).
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert re.search(r"/python scripts/run\.py\b", result.stdout.strip().splitlines()[-1])
    assert re.search(r"^run: venv$", (ROOT / "Makefile").read_text(), re.MULTILINE)


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _healthcheck_command(test: list[str] | str) -> list[str] | str:
    if isinstance(test, str):
        return test
    kind, *rest = test
    if kind == "CMD-SHELL":
        return rest[0].replace("$$", "$")
    assert kind == "CMD", test
    return rest


def test_compose_has_the_services_each_with_a_health_check(compose):
    services = compose["services"]

    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    for name in ("postgres", "redis", "web", "worker", "beat"):
        healthcheck = services[name].get("healthcheck", {})
        assert healthcheck.get("test") and not healthcheck.get("disable"), name


def test_compose_keeps_data_in_declared_volumes_and_shares_media(compose):
    declared = set(compose["volumes"])
    used: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/")):
                used.setdefault(source, set()).add(name)
                assert source in declared, f"{name} uses undeclared volume {source}"

    assert "postgres" in used["pgdata"]
    assert "redis" in used["redisdata"]
    # The worker stores images that web serves: one volume for both.
    assert {"web", "worker"} <= used["media"]


def test_compose_starts_the_app_after_its_dependencies_and_migrations(compose):
    services = compose["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        environment = services[name]["environment"]
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379/")
        assert environment["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    for dependency in {d for s in services.values() for d in s.get("depends_on", {})}:
        assert dependency in services
    # A scalable worker: no fixed name, no host port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]


def test_compose_commands_and_health_checks_exist(compose):
    for service in compose["services"].values():
        if "build" not in service:
            continue
        assert (ROOT / service["build"] / "Dockerfile").exists()
        check_command(service["command"])
        test = service.get("healthcheck", {}).get("test")
        if test:
            check_command(_healthcheck_command(test))


def test_compose_web_health_check_asks_the_readiness_probe(compose):
    test = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/\w+)", test).group(1)

    assert resolve(path).url_name == "readyz"


# --- Dockerfile ---------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_the_app_on_our_python_and_runs_gunicorn_unprivileged():
    instructions = _dockerfile()
    keywords = [keyword for keyword, _ in instructions]
    by_keyword = {keyword: rest for keyword, rest in instructions}

    python = f"python:{sys.version_info.major}.{sys.version_info.minor}"
    assert by_keyword["FROM"].startswith(python)
    for keyword, rest in instructions:
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert "manage.py collectstatic --noinput" in runs
    check_command(json.loads(by_keyword["CMD"]))
    healthcheck = by_keyword["HEALTHCHECK"]
    check_command(json.loads(healthcheck[healthcheck.index("CMD ") + 4 :]))
    assert by_keyword["USER"] not in {"root", "0"}
    assert keywords.index("USER") < keywords.index("CMD")
    assert by_keyword["EXPOSE"] == "8000"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    assert {".git", ".venv", "media/", "staticfiles/", "test-artifacts/", ".env"} <= ignored
    assert any(pattern.startswith("db.sqlite3") for pattern in ignored)
