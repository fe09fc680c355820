"""
Settings for the FlowPilot Analytics demo project.

Everything that differs between a laptop, CI and production comes from the
environment; the defaults are safe for local development only. The variables
are listed in the README ("Configuration").

https://docs.djangoproject.com/en/5.2/ref/settings/
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from flowpilot_analytics.conf import THROTTLE_RATE_FORMAT as throttle_rate_format

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def env_limit(name, default):
    """A positive integer, or None for "none" (no limit)."""
    if os.environ.get(name, "").strip().lower() == "none":
        return None
    value = env_int(name, default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be a positive integer or none, got {value!r}")
    return value


def env_proxy_header(name, default):
    """``X-Forwarded-Proto: https`` -> ``("HTTP_X_FORWARDED_PROTO", "https")``; ``off`` -> ``None``."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in {"off", "none", "false", "0"}:
        return None
    header, separator, expected = value.partition(":")
    if not separator or not header.strip() or not expected.strip():
        raise ImproperlyConfigured(
            f"{name} must be 'Header-Name: value' (e.g. 'X-Forwarded-Proto: https') or 'off', got {value!r}"
        )
    return "HTTP_" + header.strip().upper().replace("-", "_"), expected.strip()


def env_list(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


# ------------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# ------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", True)

_DEV_SECRET_KEY = "django-insecure-flowpilot-analytics-local-development-only"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY when DJANGO_DEBUG is off.")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

# ------------------------------------------------------------------------------
# HTTPS. With DJANGO_DEBUG off the defaults are those of a site served over HTTPS
# only, behind a proxy (load balancer, ingress) that terminates TLS and sets
# X-Forwarded-Proto, overwriting any value the client sent; each has its variable.
# With debug on (`make run`) they are all off: plain HTTP on localhost.
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/#https
# ------------------------------------------------------------------------------
# Who says the request came over HTTPS: trust this header only behind a proxy that sets it.
SECURE_PROXY_SSL_HEADER = env_proxy_header(
    "DJANGO_SECURE_PROXY_SSL_HEADER", None if DEBUG else ("HTTP_X_FORWARDED_PROTO", "https")
)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# A year, this host and its subdomains, and consent to browsers' preload lists (a site
# joins them only when submitted to hstspreload.org). Browsers ignore HSTS over plain HTTP.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured("DJANGO_SECURE_HSTS_SECONDS must be 0 (no HSTS) or a number of seconds")
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

INSTALLED_APPS = [
    # The stock admin: the app adds its summary page to it like any app's models.
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
    "flowpilot_analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The demo project's own pages (its landing page); the app's come from its package.
        "DIRS": [BASE_DIR / "config" / "templates"],
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

# ------------------------------------------------------------------------------
# Database
# DATABASE_URL selects the database: unset means an SQLite file in the project,
# postgres://user:password@host:port/name means PostgreSQL through psycopg 3.
# https://github.com/jazzband/dj-database-url
# ------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        # An empty DATABASE_URL counts as unset: `make run` relies on it.
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Read replica (optional). FLOWPILOT_ANALYTICS_DATABASE_URL names a streaming
# replica of DATABASE_URL; the metric's scans of sessions, steps and handoffs
# then run there, while accounts, memberships and every write stay on the
# primary. Unset, everything uses "default". See docs/scaling.md.
# https://docs.djangoproject.com/en/5.2/topics/db/multi-db/
# ------------------------------------------------------------------------------
DATABASE_ROUTERS = ["flowpilot_analytics.routers.AnalyticsReadRouter"]
if os.environ.get("FLOWPILOT_ANALYTICS_DATABASE_URL"):
    DATABASES["analytics"] = dj_database_url.parse(
        os.environ["FLOWPILOT_ANALYTICS_DATABASE_URL"],
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
    # Tests create no database for it: it reads the test database of "default".
    DATABASES["analytics"]["TEST"] = {"MIRROR": "default"}
    # A request that cannot reach the replica reads the primary (docs/scaling.md): a replica
    # that does not answer at all must not hold it for libpq's default (no timeout).
    DATABASES["analytics"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)

# ------------------------------------------------------------------------------
# Cross-account reads (PostgreSQL with Row-Level Security). The admin summary,
# the report command and the app's admin pages read every account through
# DJANGO_CROSS_ACCOUNT_DATABASE_URL: the same database as DATABASE_URL, as the
# role made by `manage.py grant_cross_account_role`, which the app role cannot
# become. Unset, they use DATABASE_URL: fine on SQLite or as the tables' owner;
# under the app role they show no account and say why. README, "Security".
# ------------------------------------------------------------------------------
if os.environ.get("DJANGO_CROSS_ACCOUNT_DATABASE_URL"):
    DATABASES["cross_account"] = dj_database_url.parse(
        os.environ["DJANGO_CROSS_ACCOUNT_DATABASE_URL"],
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
    DATABASES["cross_account"]["TEST"] = {"MIRROR": "default"}

# ------------------------------------------------------------------------------
# Cache. DJANGO_CACHE_URL (or REDIS_URL), redis://host:6379/0, selects Django's
# Redis cache, shared by every worker: the analytics throttle counts there, so
# its rate holds across gunicorn's processes. Unset: local memory, per process
# (each worker then admits the whole rate). The `redis` package is in the demo
# extra; the app itself needs no Redis. https://docs.djangoproject.com/en/5.2/topics/cache/#redis
# ------------------------------------------------------------------------------
_cache_variable = "DJANGO_CACHE_URL" if os.environ.get("DJANGO_CACHE_URL") else "REDIS_URL"
if os.environ.get(_cache_variable):
    if urlsplit(os.environ[_cache_variable]).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{_cache_variable} must be a Redis URL (redis://host:6379/0, rediss://..., unix://...), "
            f"got {os.environ[_cache_variable]!r}"
        )
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ[_cache_variable],
            # Several projects may share a Redis database.
            "KEY_PREFIX": "flowpilot_analytics",
        }
    }

# ------------------------------------------------------------------------------
# Internationalisation: timestamps are stored in UTC.
# https://docs.djangoproject.com/en/5.2/topics/i18n/timezones/
# ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------
# Static files (served by runserver in development).
# ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "/api-auth/login/"
# Without a ?next=, a login lands on the demo's landing page, which links every face of the app.
LOGIN_REDIRECT_URL = "/"

# ------------------------------------------------------------------------------
# Django REST framework
# Token first: its WWW-Authenticate header is what makes anonymous calls 401
# rather than 403. https://www.django-rest-framework.org/api-guide/authentication/
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# ------------------------------------------------------------------------------
# FlowPilot Analytics: every key has its default inside the app (README,
# "Install into your project"); the demo sets from the environment only those
# an operator tunes. A malformed value stops the start, naming the variable;
# the app's system checks (flowpilot_analytics.E0xx) name the key.
# ------------------------------------------------------------------------------
FLOWPILOT_ANALYTICS = {
    # The analytics endpoints' per-user rate, counted in the default cache (per
    # process unless CACHES names a shared one): past it, 429 with Retry-After.
    "THROTTLE_RATE": os.environ.get("DJANGO_ANALYTICS_THROTTLE_RATE") or "120/minute",
    # PostgreSQL cancels any statement of an analytics request that runs longer
    # (the API then answers 503 with Retry-After); 0 turns the limit off.
    "STATEMENT_TIMEOUT_MS": env_int("DJANGO_ANALYTICS_STATEMENT_TIMEOUT_MS", 5000),
    # Reads of the activity tables go to the replica when there is one (above).
    "DB_ALIAS": "analytics" if "analytics" in DATABASES else "default",
    # The drill-down's streamed CSV stops past these (a last line says so); "none" lifts one.
    "EXPORT_MAX_ROWS": env_limit("DJANGO_ANALYTICS_EXPORT_MAX_ROWS", 100_000),
    "EXPORT_MAX_SECONDS": env_limit("DJANGO_ANALYTICS_EXPORT_MAX_SECONDS", 25),
    # The faces reading every account use their own connection when there is one (above).
    "CROSS_ACCOUNT_DB_ALIAS": "cross_account" if "cross_account" in DATABASES else None,
}
if not throttle_rate_format.fullmatch(FLOWPILOT_ANALYTICS["THROTTLE_RATE"]):
    raise ImproperlyConfigured(
        "DJANGO_ANALYTICS_THROTTLE_RATE must look like 120/minute (a positive count per second, "
        f"minute, hour or day), got {FLOWPILOT_ANALYTICS['THROTTLE_RATE']!r}"
    )
if FLOWPILOT_ANALYTICS["STATEMENT_TIMEOUT_MS"] < 0:
    raise ImproperlyConfigured("DJANGO_ANALYTICS_STATEMENT_TIMEOUT_MS must be 0 (off) or a positive number")

# ------------------------------------------------------------------------------
# OpenAPI schema (drf-spectacular): /api/schema/, with Swagger UI and Redoc
# served from drf-spectacular-sidecar's bundled files (no CDN).
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
# ------------------------------------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "FlowPilot Analytics API",
    "DESCRIPTION": (
        "Post-claim activity lag of escalated FlowPilot sessions, per customer account. "
        "Read-only; every figure is of one account the caller is an engineer or admin of."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ------------------------------------------------------------------------------
# Logging: warnings and errors to the console, each line once.
# ------------------------------------------------------------------------------
# Django's own DEFAULT_LOGGING gives the "django" logger a console handler (with
# DEBUG on) and lets it propagate to the root, whose console handler printed every
# django.* line a second time. Here the root alone prints; "django" only passes its
# records up (django.server keeps Django's own handler, which does not propagate).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
    "loggers": {"django": {"handlers": [], "level": "INFO", "propagate": True}},
}

# SQLite ignores the INCLUDE columns of the covering indexes (PostgreSQL uses
# them for index-only scans); the indexes themselves still apply.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
