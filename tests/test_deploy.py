"""The demo project in production: HTTPS settings from the environment, and Django's deployment check.

With ``DJANGO_DEBUG=false`` the project is an HTTPS-only site behind a TLS-terminating
proxy unless told otherwise; with debug on (``make run``) it serves plain HTTP.
"""

import os
import runpy
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from flowpilot_analytics.models import Membership

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "config" / "settings.py"
URL = "/api/v1/analytics/flowpilot/escalations"
HTTPS_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
)
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "analytics.example.com",
}


@pytest.fixture
def environment(monkeypatch):
    """Sets variables for the settings file, after clearing every ``DJANGO_`` one the run may have."""
    for name in list(os.environ):
        if name.startswith("DJANGO_") or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)

    def load(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        loaded = runpy.run_path(str(SETTINGS_FILE))
        return {name: loaded[name] for name in HTTPS_SETTINGS}

    return load


def test_the_deployment_check_passes_with_only_debug_off_a_secret_key_and_allowed_hosts():
    """What CI runs: `check --deploy --fail-level WARNING`, with nothing else configured."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **PRODUCTION}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_with_debug_off_the_site_is_https_only_behind_a_proxy(environment):
    assert environment(**PRODUCTION) == {
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_with_debug_on_make_run_serves_plain_http(environment):
    assert environment() == {
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
    }


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("DJANGO_SECURE_SSL_REDIRECT", "false", "SECURE_SSL_REDIRECT", False),
        ("DJANGO_SECURE_HSTS_SECONDS", "3600", "SECURE_HSTS_SECONDS", 3600),
        ("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", "no", "SECURE_HSTS_INCLUDE_SUBDOMAINS", False),
        ("DJANGO_SECURE_HSTS_PRELOAD", "off", "SECURE_HSTS_PRELOAD", False),
        ("DJANGO_SESSION_COOKIE_SECURE", "0", "SESSION_COOKIE_SECURE", False),
        ("DJANGO_CSRF_COOKIE_SECURE", "false", "CSRF_COOKIE_SECURE", False),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Scheme: https", "SECURE_PROXY_SSL_HEADER",
         ("HTTP_X_FORWARDED_SCHEME", "https")),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "off", "SECURE_PROXY_SSL_HEADER", None),
    ],
)
def test_each_default_has_its_variable(environment, variable, value, setting, expected):
    loaded = environment(**PRODUCTION, **{variable: value})
    assert loaded[setting] == expected
    # The others keep their production defaults.
    others = {name: loaded[name] for name in HTTPS_SETTINGS if name != setting}
    defaults = environment(**{**PRODUCTION, variable: ""})
    assert others == {name: defaults[name] for name in others}


def test_a_variable_turns_a_protection_on_with_debug_on_too(environment):
    assert environment(DJANGO_SECURE_HSTS_SECONDS="60")["SECURE_HSTS_SECONDS"] == 60


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_SECURE_SSL_REDIRECT", "maybe"),
        ("DJANGO_SECURE_HSTS_SECONDS", "a year"),
        ("DJANGO_SECURE_HSTS_SECONDS", "-1"),
        ("DJANGO_SECURE_HSTS_PRELOAD", "2"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", ": https"),
    ],
)
def test_a_malformed_value_stops_the_start_naming_the_variable(environment, variable, value):
    with pytest.raises(ImproperlyConfigured, match=variable):
        environment(**PRODUCTION, **{variable: value})


# --- What a client sees with the production values ---------------------------------------


@pytest.fixture
def production_https(settings, environment):
    for name, value in environment(**PRODUCTION).items():
        setattr(settings, name, value)


@pytest.mark.django_db
def test_plain_http_is_redirected_and_https_through_the_proxy_gets_hsts(production_https, client, member):
    plain = client.get(URL, {"period": "7d"})
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/api/v1/analytics/flowpilot/escalations?period=7d"

    client.force_login(member(Membership.Role.ENGINEER))
    secure = client.get(URL, {"period": "7d"}, headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_the_login_cookies_are_secure(production_https, client, django_user_model):
    django_user_model.objects.create_user("alice", password="s3cret-pass")
    proxy = {"X-Forwarded-Proto": "https"}
    client.get("/api-auth/login/", headers=proxy)
    credentials = {"username": "alice", "password": "s3cret-pass"}
    response = client.post("/api-auth/login/", credentials, headers=proxy)
    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] is True
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.parametrize("logger", ["django.request", "django.server", "flowpilot_analytics.api.bases"])
def test_make_run_prints_each_log_line_once(logger):
    # As `make run` configures logging (debug on): Django's "django" handler and the root's
    # console handler used to print every django.* line twice.
    script = (
        "import logging, django; django.setup(); "
        f"logging.getLogger({logger!r}).warning('one line, printed once')"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr.count("one line, printed once") == 1, result.stderr
