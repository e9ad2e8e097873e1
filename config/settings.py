"""The one settings module, driven by environment variables (DESIGN.md §8).

Every value has a default that serves local development; a value that can not be
parsed stops start-up with a message naming the variable.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from avatars import image_models

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def _read(name: str, cast, default):
    """Read one variable, turning a bad value into a start-up error that names it."""
    try:
        return cast(name, default=default)
    except (ValueError, TypeError, environ.ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"Setting {name} has an invalid value: {exc}") from exc


def _bool(name: str, default: bool) -> bool:
    """Strict: a typo such as DJANGO_DEBUG=ture must not silently mean False."""
    return _parse_bool(name, env.str(name, default=""), default)


def _parse_bool(name: str, raw: str, default: bool) -> bool:
    raw = raw.strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"Setting {name} must be true or false, got {raw!r}")


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ImproperlyConfigured(f"Setting {name} must be greater than 0, got {value!r}")
    return value


def _at_least(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ImproperlyConfigured(f"Setting {name} must be at least {minimum}, got {value!r}")
    return value


DEBUG = _bool("DJANGO_DEBUG", False)
SECRET_KEY = _read("DJANGO_SECRET_KEY", env.str, "")
if not SECRET_KEY:
    # A known key would make sessions forgeable and opaque user ids guessable: only in debug.
    if not DEBUG:
        raise ImproperlyConfigured(
            "Setting DJANGO_SECRET_KEY must be set (or DJANGO_DEBUG=true for local development)"
        )
    SECRET_KEY = "django-insecure-development-key"
ALLOWED_HOSTS = _read("DJANGO_ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = _read("DJANGO_CSRF_TRUSTED_ORIGINS", env.list, [])

# Served over HTTPS by a proxy that terminates TLS and sets X-Forwarded-Proto (it must also
# overwrite any X-Forwarded-Proto a client sends): secure cookies, HSTS, redirects to https
# and https links (image URLs). Probes that reach the web directly over http are not redirected.
HTTPS = _bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _at_least(
        "DJANGO_HSTS_SECONDS", _read("DJANGO_HSTS_SECONDS", env.int, 31_536_000), 0
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _bool("DJANGO_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Asking browsers to preload the host is the operator's own decision, not a default.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "credits",
    "avatars",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.body_limit.RefuseOversizedBodies",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a sign-in that axes refused into config.sign_in's 429; last, as axes asks.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": _read("DATABASE_URL", env.db_url, f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] not in {
    "django.db.backends.postgresql",
    "django.db.backends.sqlite3",
}:
    raise ImproperlyConfigured("Setting DATABASE_URL must be a postgres:// or sqlite:/// URL")
# Reuse connections for a minute, checked before each reuse, unless the URL says otherwise
# (?conn_max_age=0): a new connection per request and task cost the worker 10 ms and the web
# half its throughput (make bench). The URL's conn_health_checks arrives as a string.
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = _parse_bool(
    "DATABASE_URL conn_health_checks",
    str(DATABASES["default"].get("CONN_HEALTH_CHECKS", "")),
    default=True,
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The web page's own script and styles (no build step).
STATICFILES_DIRS = [BASE_DIR / "static"]
# The web page signs in with Django's own views; the API then uses the session cookie.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Sign-in lockout (django-axes): after SIGN_IN_FAILURE_LIMIT failures from one address, or for
# one username from anywhere, that address or username is refused for SIGN_IN_LOCKOUT_MINUTES.
# A success resets its failures. Staff see and lift lockouts in the admin ("Access attempts").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _at_least(
    "SIGN_IN_FAILURE_LIMIT", _read("SIGN_IN_FAILURE_LIMIT", env.int, 5), 1
)
AXES_COOLOFF_TIME = timedelta(
    minutes=_at_least("SIGN_IN_LOCKOUT_MINUTES", _read("SIGN_IN_LOCKOUT_MINUTES", env.int, 15), 1)
)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.sign_in.client_address"
AXES_LOCKOUT_CALLABLE = "config.sign_in.answer_locked_out"
# Failures are kept until their cool-off ends; successful sign-ins are not logged at all.
AXES_DISABLE_ACCESS_LOG = True
MEDIA_URL = "media/"
MEDIA_ROOT = Path(_read("MEDIA_ROOT", env.str, str(BASE_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API -----------------------------------------------------------------------------
# Proxies in front of the web that each append the address they saw to X-Forwarded-For. The
# client is the address the outermost of them saw; 0 (no proxy): REMOTE_ADDR, and the header,
# which anyone can write, is ignored. Throttles per address depend on it.
TRUSTED_PROXY_COUNT = _at_least("TRUSTED_PROXY_COUNT", _read("TRUSTED_PROXY_COUNT", env.int, 0), 0)
REST_FRAMEWORK = {
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "config.api_errors.handle_api_exception",
    # Per user (per address for sign-in); counted in the shared cache, so across processes.
    "DEFAULT_THROTTLE_RATES": {
        "submissions": _read("THROTTLE_SUBMISSIONS", env.str, "60/min"),
        "uploads": _read("THROTTLE_UPLOADS", env.str, "30/min"),
        "auth": _read("THROTTLE_AUTH", env.str, "20/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Avatar service API",
    "DESCRIPTION": "Upload a selfie, spend a credit, get a full-body comic avatar.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Redis and Celery ---------------------------------------------------------------------
REDIS_URL = _read("REDIS_URL", env.str, "redis://127.0.0.1:6379/0")
# Throttle counters live in Redis, shared by every web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _read("CACHE_URL", env.str, "") or REDIS_URL,
        "KEY_PREFIX": "avatars-cache",
    }
}

# How long a task may run before Celery kills it (seconds).
CELERY_TASK_TIME_LIMIT = _positive(
    "CELERY_TASK_TIME_LIMIT", _read("CELERY_TASK_TIME_LIMIT", env.int, 120)
)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 10 if CELERY_TASK_TIME_LIMIT > 20 else None
# A message not acknowledged within this many seconds is redelivered by Redis. Every countdown
# we schedule must fit well inside it, or a waiting poll would be delivered twice.
CELERY_VISIBILITY_TIMEOUT = _positive(
    "CELERY_VISIBILITY_TIMEOUT", _read("CELERY_VISIBILITY_TIMEOUT", env.int, 3600)
)
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_TASK_DEFAULT_QUEUE = _read("CELERY_TASK_DEFAULT_QUEUE", env.str, "celery")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Replicate ----------------------------------------------------------------------------
REPLICATE_API_TOKEN = _read("REPLICATE_API_TOKEN", env.str, "")
REPLICATE_BASE_URL = _read("REPLICATE_BASE_URL", env.str, "https://api.replicate.com")
REPLICATE_MODEL = _read("REPLICATE_MODEL", env.str, image_models.DEFAULT_MODEL)
if REPLICATE_MODEL not in image_models.MODELS:
    raise ImproperlyConfigured(
        f"Setting REPLICATE_MODEL must be one of {', '.join(image_models.MODELS)}, "
        f"got {REPLICATE_MODEL!r}"
    )
OPENAI_API_KEY = _read("OPENAI_API_KEY", env.str, "")
REPLICATE_WEBHOOK_SECRET = _read("REPLICATE_WEBHOOK_SECRET", env.str, "")
if REPLICATE_WEBHOOK_SECRET and not re.fullmatch(
    r"whsec_[A-Za-z0-9+/]+={0,2}", REPLICATE_WEBHOOK_SECRET
):
    # Never echo the value: it is a secret.
    raise ImproperlyConfigured("Setting REPLICATE_WEBHOOK_SECRET must look like whsec_<base64>")
PUBLIC_BASE_URL = _read("PUBLIC_BASE_URL", env.str, "").rstrip("/")
# Against the real Replicate (a token, and its API: the simulator is exempt), refuse to start
# with what could never work, rather than failing every generation later.
_REAL_REPLICATE = bool(REPLICATE_API_TOKEN) and urlsplit(REPLICATE_BASE_URL).hostname == (
    "api.replicate.com"
)
if _REAL_REPLICATE and image_models.MODELS[REPLICATE_MODEL].needs_openai_key and not OPENAI_API_KEY:
    raise ImproperlyConfigured(
        f"Setting OPENAI_API_KEY is required: {REPLICATE_MODEL} runs with your own OpenAI key"
    )
if (
    _REAL_REPLICATE
    and not DEBUG
    and PUBLIC_BASE_URL
    and urlsplit(PUBLIC_BASE_URL).scheme != "https"
):
    raise ImproperlyConfigured(
        "Setting PUBLIC_BASE_URL must be an https:// address in production (webhooks are sent "
        "to it)"
    )
# The account's create limit (Replicate: 600 a minute) and how many may go at once; every
# worker process shares one pace through Redis (avatars/pacing.py).
REPLICATE_CREATES_PER_MINUTE = _positive(
    "REPLICATE_CREATES_PER_MINUTE", _read("REPLICATE_CREATES_PER_MINUTE", env.float, 600.0)
)
REPLICATE_CREATES_BURST = _at_least(
    "REPLICATE_CREATES_BURST", _read("REPLICATE_CREATES_BURST", env.int, 20), 1
)
# Transient failures in a row (any process) that open the circuit breaker (avatars/breaker.py).
REPLICATE_BREAKER_THRESHOLD = _at_least(
    "REPLICATE_BREAKER_THRESHOLD", _read("REPLICATE_BREAKER_THRESHOLD", env.int, 3), 1
)

# --- Avatars ------------------------------------------------------------------------------
AVATAR_CREDIT_COST = _at_least("AVATAR_CREDIT_COST", _read("AVATAR_CREDIT_COST", env.int, 1), 1)
AVATAR_MAX_ATTEMPTS = _at_least("AVATAR_MAX_ATTEMPTS", _read("AVATAR_MAX_ATTEMPTS", env.int, 2), 1)
AVATAR_API_MAX_RETRIES = _at_least(
    "AVATAR_API_MAX_RETRIES", _read("AVATAR_API_MAX_RETRIES", env.int, 2), 0
)
# Largest pause between two retries of one Replicate call (seconds).
AVATAR_API_RETRY_MAX_DELAY = _positive(
    "AVATAR_API_RETRY_MAX_DELAY", _read("AVATAR_API_RETRY_MAX_DELAY", env.float, 60.0)
)
# First pause before retrying a transient Replicate API error; it doubles each time.
AVATAR_API_RETRY_INITIAL_DELAY = _positive(
    "AVATAR_API_RETRY_INITIAL_DELAY", _read("AVATAR_API_RETRY_INITIAL_DELAY", env.float, 1.0)
)
AVATAR_GENERATION_TIMEOUT = _positive(
    "AVATAR_GENERATION_TIMEOUT", _read("AVATAR_GENERATION_TIMEOUT", env.float, 600.0)
)
# A retried attempt starts only with this many seconds left before the deadline: a typical run.
AVATAR_MIN_ATTEMPT_SECONDS = _at_least(
    "AVATAR_MIN_ATTEMPT_SECONDS", _read("AVATAR_MIN_ATTEMPT_SECONDS", env.float, 120.0), 0
)
# The first poll comes at the 10th percentile of recent run times; this until there are any.
AVATAR_POLL_FIRST_DELAY = _positive(
    "AVATAR_POLL_FIRST_DELAY", _read("AVATAR_POLL_FIRST_DELAY", env.float, 15.0)
)
AVATAR_POLL_INITIAL_DELAY = _positive(
    "AVATAR_POLL_INITIAL_DELAY", _read("AVATAR_POLL_INITIAL_DELAY", env.float, 2.0)
)
AVATAR_POLL_MAX_DELAY = _positive(
    "AVATAR_POLL_MAX_DELAY", _read("AVATAR_POLL_MAX_DELAY", env.float, 30.0)
)
# Fraction of each poll delay added at random, so many polls do not arrive together.
AVATAR_POLL_JITTER = 0.2
# With webhooks on, polls are only a fallback and wait this many times longer.
AVATAR_WEBHOOK_POLL_FACTOR = 3
# Seconds a step's due time may pass before the sweeper re-drives it (the message was lost).
AVATAR_SWEEP_GRACE = _positive("AVATAR_SWEEP_GRACE", _read("AVATAR_SWEEP_GRACE", env.float, 5.0))
# How often celery-beat runs the sweeper (seconds).
AVATAR_SWEEP_INTERVAL = _positive(
    "AVATAR_SWEEP_INTERVAL", _read("AVATAR_SWEEP_INTERVAL", env.float, 5.0)
)
# The longest a Celery message may legitimately sit unacknowledged: a poll's largest countdown,
# then the largest pause before a retried call, then the task's own time limit. Redis redelivers
# anything unacknowledged for CELERY_VISIBILITY_TIMEOUT, so this must stay well below it
# (avatars/checks.py refuses to start otherwise).
CELERY_LONGEST_UNACKED_SECONDS = (
    AVATAR_POLL_MAX_DELAY * (1 + AVATAR_POLL_JITTER)
    + AVATAR_API_RETRY_MAX_DELAY
    + CELERY_TASK_TIME_LIMIT
)
AVATAR_MAX_IN_FLIGHT_PER_USER = _at_least(
    "AVATAR_MAX_IN_FLIGHT_PER_USER", _read("AVATAR_MAX_IN_FLIGHT_PER_USER", env.int, 3), 1
)
AVATAR_OUTPUT_ALLOWED_HOSTS = _read(
    "AVATAR_OUTPUT_ALLOWED_HOSTS", env.list, ["replicate.delivery", "*.replicate.delivery"]
)
AVATAR_OUTPUT_ALLOW_HTTP = _bool("AVATAR_OUTPUT_ALLOW_HTTP", False)
# Downloads connect only to public addresses; the simulator serves its outputs from 127.0.0.1.
AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES = _bool("AVATAR_OUTPUT_ALLOW_PRIVATE_ADDRESSES", False)
AVATAR_RETENTION_DAYS = _read("AVATAR_RETENTION_DAYS", env.int, None)
AVATAR_IMAGE_QUALITY = _read("AVATAR_IMAGE_QUALITY", env.str, "high")
if AVATAR_IMAGE_QUALITY not in image_models.QUALITIES:
    raise ImproperlyConfigured(
        "Setting AVATAR_IMAGE_QUALITY must be low, medium, high or auto, "
        f"got {AVATAR_IMAGE_QUALITY!r}"
    )


def _price_table(name: str, defaults: dict, check) -> dict:
    """A JSON table from the environment, laid over the defaults key by key."""
    table = {**defaults, **_read(name, env.json, {})}
    if not all(check(value) for value in table.values()):
        raise ImproperlyConfigured(f"Setting {name} has an entry that is not a valid price")
    return table


def _is_price(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


# USD per output image, by model and quality (README, "What each avatar costs").
AVATAR_PRICES_USD = _price_table(
    "AVATAR_PRICES_USD",
    image_models.PRICES_USD,
    lambda qualities: isinstance(qualities, dict)
    and set(qualities) >= set(image_models.QUALITIES)
    and all(_is_price(price) for price in qualities.values()),
)
# USD per million gpt-image-1 tokens, billed by OpenAI to OPENAI_API_KEY.
OPENAI_TOKEN_PRICES_USD_PER_MILLION = _price_table(
    "OPENAI_TOKEN_PRICES_USD_PER_MILLION", image_models.TOKEN_PRICES_USD_PER_MILLION, _is_price
)
# Today's cost (UTC) plus the estimate of what is in flight at which new submissions are refused
# (503 capacity_reached) until midnight UTC. Unset: no cap.
AVATAR_DAILY_SPEND_LIMIT_USD = _read("AVATAR_DAILY_SPEND_LIMIT_USD", env.float, None)
if AVATAR_DAILY_SPEND_LIMIT_USD is not None:
    _positive("AVATAR_DAILY_SPEND_LIMIT_USD", AVATAR_DAILY_SPEND_LIMIT_USD)
# Seconds a signed avatar image URL (the API's `image_url`) stays valid.
AVATAR_IMAGE_URL_MAX_AGE = _at_least(
    "AVATAR_IMAGE_URL_MAX_AGE", _read("AVATAR_IMAGE_URL_MAX_AGE", env.int, 3600), 1
)

# --- Credits ------------------------------------------------------------------------------
# Automatic refunds per account in 24 hours; past it, refunds wait for staff review.
CREDITS_AUTO_REFUND_DAILY_LIMIT = _at_least(
    "CREDITS_AUTO_REFUND_DAILY_LIMIT", _read("CREDITS_AUTO_REFUND_DAILY_LIMIT", env.int, 5), 0
)

# --- Selfies ------------------------------------------------------------------------------
SELFIE_MAX_BYTES = _positive(
    "SELFIE_MAX_BYTES", _read("SELFIE_MAX_BYTES", env.int, 10 * 1024 * 1024)
)
SELFIE_MIN_SIDE = 256
# Decoded pixels above this are refused before decoding (decompression bombs).
SELFIE_MAX_PIXELS = _positive("SELFIE_MAX_PIXELS", _read("SELFIE_MAX_PIXELS", env.int, 40_000_000))
# The stored copy is scaled down so its longer side is at most this.
SELFIE_STORED_MAX_SIDE = 2048
# The face check at upload (avatars/faces.py): a warning the person may override, not a wall.
SELFIE_FACE_CHECK = _bool("SELFIE_FACE_CHECK", True)
SELFIE_MIN_FACE_FRACTION = _read("SELFIE_MIN_FACE_FRACTION", env.float, 0.15)
if not 0 < SELFIE_MIN_FACE_FRACTION < 1:
    raise ImproperlyConfigured(
        f"Setting SELFIE_MIN_FACE_FRACTION must be between 0 and 1, got {SELFIE_MIN_FACE_FRACTION}"
    )
SELFIE_RETENTION_HOURS = _positive(
    "SELFIE_RETENTION_HOURS", _read("SELFIE_RETENTION_HOURS", env.float, 24.0)
)
DATA_UPLOAD_MAX_MEMORY_SIZE = SELFIE_MAX_BYTES + 1024 * 1024
# An upload is held in memory and never written to a temporary file, which a killed web worker
# would leave behind. Bodies over SELFIE_MAX_BYTES + 64 KiB are refused unread
# (config/body_limit.py), so no request holds more than that.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# --- Alerts and mail ------------------------------------------------------------------------
# Who hears about alerts: DJANGO_ADMINS=ops@example.com,oncall@example.com
ADMINS = [(address, address) for address in _read("DJANGO_ADMINS", env.list, [])]
SERVER_EMAIL = _read("DJANGO_SERVER_EMAIL", env.str, "avatars@localhost")
EMAIL_SUBJECT_PREFIX = "[avatars] "
# smtp://user:password@host:587/?tls=True in production; printed to the console by default.
vars().update(_read("EMAIL_URL", env.email_url, "consolemail://"))
ALERT_FAILURE_RATE_MIN_GENERATIONS = 10
ALERT_CONTENT_POLICY_SPIKE = _at_least(
    "ALERT_CONTENT_POLICY_SPIKE", _read("ALERT_CONTENT_POLICY_SPIKE", env.int, 5), 1
)
# Bearer token that may read /metrics (staff may always); empty: staff only.
METRICS_TOKEN = _read("METRICS_TOKEN", env.str, "")

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = _read("LOG_LEVEL", env.str, "INFO").upper()
# "json": one object per line with the avatar's ids on pipeline lines; "text" for people.
LOG_FORMAT = _read("LOG_FORMAT", env.str, "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"Setting LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"avatar_context": {"()": "avatars.log_context.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["avatar_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # One line per HTTP request (every poll) is noise; failures are logged by our code.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
# The worker logs through the LOGGING above (JSON included), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Scheduled work (celery-beat; the DatabaseScheduler syncs these into its tables) -------
CELERY_BEAT_SCHEDULE = {
    "sweep-avatars": {
        "task": "avatars.tasks.sweep_avatars_task",
        "schedule": AVATAR_SWEEP_INTERVAL,
    },
    # A list call to Replicate each time: once a minute is enough for what it finds.
    "cancel-stray-predictions": {
        "task": "avatars.tasks.cancel_stray_predictions_task",
        "schedule": 60,
    },
    "cleanup": {"task": "avatars.tasks.cleanup_task", "schedule": 3600},
    # Selfies Replicate could not delete when their generation ended: gone within a minute.
    "forget-leftover-uploads": {
        "task": "avatars.tasks.forget_leftover_uploads_task",
        "schedule": 60,
    },
    "check-alerts": {"task": "avatars.tasks.check_alerts_task", "schedule": 300},
    # Our input against the model's published schema (also once at each worker start).
    "check-model-schema": {
        "task": "avatars.tasks.check_model_schema_task",
        "schedule": 24 * 60 * 60,
    },
}
