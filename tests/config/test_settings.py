from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from avatars.checks import check_visibility_timeout_covers_countdowns
from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("AVATAR_MAX_ATTEMPTS", "two"),
        ("AVATAR_MAX_ATTEMPTS", "0"),
        ("AVATAR_GENERATION_TIMEOUT", "-5"),
        ("DJANGO_DEBUG", "maybe"),
        ("SELFIE_MAX_BYTES", "10MB"),
        ("AVATAR_IMAGE_QUALITY", "ultra"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("REPLICATE_WEBHOOK_SECRET", "not-a-whsec-secret"),
        ("TRUSTED_PROXY_COUNT", "-1"),
        ("REPLICATE_MODEL", "openai/dall-e-3"),
        ("AVATAR_PRICES_USD", '{"openai/gpt-image-2": {"low": 0.02}}'),
        ("AVATAR_PRICES_USD", '{"openai/gpt-image-2": "cheap"}'),
        ("OPENAI_TOKEN_PRICES_USD_PER_MILLION", '{"output_tokens": -40}'),
        ("AVATAR_DAILY_SPEND_LIMIT_USD", "0"),
        ("SELFIE_MIN_FACE_FRACTION", "1.5"),
        ("SELFIE_FACE_CHECK", "sometimes"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(name, value):
    result = _load_settings(**{name: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


REAL_REPLICATE = {"REPLICATE_API_TOKEN": "r8_real", "OPENAI_API_KEY": "sk-real"}


@pytest.mark.parametrize(
    "name, env",
    [
        ("OPENAI_API_KEY", {**REAL_REPLICATE, "OPENAI_API_KEY": ""}),
        ("PUBLIC_BASE_URL", {**REAL_REPLICATE, "PUBLIC_BASE_URL": "http://avatars.example"}),
    ],
)
def test_start_up_refuses_what_can_never_work_against_the_real_replicate(name, env):
    refused = _load_settings(**env)

    assert refused.returncode != 0
    assert name in refused.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "env",
    [
        # the simulator
        {"REPLICATE_API_TOKEN": "r8_sim", "REPLICATE_BASE_URL": "http://127.0.0.1:8790"},
        # no token: nothing is sent to Replicate
        {"OPENAI_API_KEY": ""},
        # development
        {**REAL_REPLICATE, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "DJANGO_DEBUG": "true"},
        {**REAL_REPLICATE, "PUBLIC_BASE_URL": "https://avatars.example"},
        # only gpt-image-1 runs on the operator's own OpenAI key
        {**REAL_REPLICATE, "OPENAI_API_KEY": "", "REPLICATE_MODEL": "openai/gpt-image-2"},
        {**REAL_REPLICATE, "OPENAI_API_KEY": "", "REPLICATE_MODEL": "openai/gpt-image-1.5"},
    ],
)
def test_start_up_goes_on_with_the_simulator_or_a_complete_setup(env):
    started = _load_settings(**env)

    assert started.returncode == 0, started.stderr


PRODUCTION = {
    "DJANGO_SECRET_KEY": "a-production-secret-" + "x9Kq2!vB7#mZ" * 5,
    "DJANGO_ALLOWED_HOSTS": "avatars.example",
    "DJANGO_DEBUG": "false",
}


def test_behind_https_the_deploy_checks_report_nothing():
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **PRODUCTION, "DJANGO_HTTPS": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "identified no issues" in checked.stdout


def _shown(expression: str, **env: str) -> str:
    """What `expression` evaluates to once the settings load with `env`."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "from rest_framework.settings import api_settings; "
            f"print(({expression}))",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_https_settings_follow_the_environment():
    shown = _shown(
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT",
        **PRODUCTION,
        DJANGO_HTTPS="true",
        DJANGO_HSTS_SECONDS="600",
    )

    assert shown == "(True, True, 600, ('HTTP_X_FORWARDED_PROTO', 'https'), True)"


def test_the_client_address_comes_from_the_trusted_proxies_only():
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0, "by default the header is ignored"
    assert _shown("api_settings.NUM_PROXIES", TRUSTED_PROXY_COUNT="2") == "2"


def test_a_price_table_from_the_environment_replaces_the_defaults_model_by_model():
    prices = '{"openai/gpt-image-2": {"low": 1, "medium": 2, "high": 3, "auto": 3}}'

    shown = _shown(
        "s.AVATAR_PRICES_USD['openai/gpt-image-2']['medium'], "
        "s.AVATAR_PRICES_USD['openai/gpt-image-1.5']['high']",
        AVATAR_PRICES_USD=prices,
    )

    assert shown == "(2, 0.136)"


@pytest.mark.parametrize(
    "query, reuse",
    [
        ("", "(60, True)"),
        ("?conn_max_age=0", "(0, True)"),
        ("?conn_max_age=10&conn_health_checks=false", "(10, False)"),
    ],
)
def test_database_connections_are_reused_and_checked_unless_the_url_says_otherwise(query, reuse):
    shown = _shown(
        "s.DATABASES['default']['CONN_MAX_AGE'], s.DATABASES['default']['CONN_HEALTH_CHECKS']",
        DATABASE_URL=f"postgres://u@db.example:5432/avatars{query}",
    )

    assert shown == reuse


def test_production_refuses_to_start_without_a_secret_key():
    result = _load_settings(DJANGO_SECRET_KEY="", DJANGO_DEBUG="false")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr.splitlines()[-1]
    assert _load_settings(DJANGO_SECRET_KEY="", DJANGO_DEBUG="true").returncode == 0


def test_a_bad_webhook_secret_is_not_echoed():
    result = _load_settings(REPLICATE_WEBHOOK_SECRET="whsec_has spaces secret-value")

    assert result.returncode != 0
    assert "secret-value" not in result.stderr


def test_good_settings_load():
    assert _load_settings(AVATAR_MAX_ATTEMPTS="3").returncode == 0


def test_celery_is_configured_for_at_least_once_delivery():
    conf = celery_app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == settings.CELERY_VISIBILITY_TIMEOUT


def test_visibility_timeout_covers_the_longest_countdown_retry_and_run():
    longest_countdown = settings.AVATAR_POLL_MAX_DELAY * (1 + settings.AVATAR_POLL_JITTER)
    longest_unacked = (
        longest_countdown + settings.AVATAR_API_RETRY_MAX_DELAY + settings.CELERY_TASK_TIME_LIMIT
    )

    assert settings.CELERY_LONGEST_UNACKED_SECONDS == pytest.approx(longest_unacked)
    assert longest_unacked * 2 <= settings.CELERY_VISIBILITY_TIMEOUT
    assert check_visibility_timeout_covers_countdowns(None) == []


def test_a_visibility_timeout_shorter_than_a_countdown_is_refused(settings):
    settings.CELERY_VISIBILITY_TIMEOUT = 60

    errors = check_visibility_timeout_covers_countdowns(None)

    assert [e.id for e in errors] == ["avatars.E001"]


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_beat_runs_the_sweeper_every_few_seconds_with_the_database_scheduler():
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-avatars"]
    celery_app.loader.import_default_modules()  # what a worker does at start: autodiscovery

    assert entry["task"] in celery_app.tasks
    # A lost step (a killed worker's countdowns) is re-driven within about 20 s
    assert entry["schedule"] == settings.AVATAR_SWEEP_INTERVAL == 5
    assert settings.AVATAR_SWEEP_GRACE + settings.AVATAR_SWEEP_INTERVAL <= 10
    assert celery_app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
