"""The app's settings: one dict with defaults inside the app, its system checks, and a host that sets nothing.

CONTRACT.md, "Plugged into a host monolith": authentication follows the host's DRF
defaults unless the app's setting names others; the throttle applies the app's
own default rate whatever the host's ``REST_FRAMEWORK`` says.
"""

import base64
import re
from pathlib import Path

import pytest
from django.core.checks import run_checks

from flowpilot_analytics.access import membership_roles
from flowpilot_analytics.conf import DEFAULT_FIELDS, DEFAULTS, SETTINGS, app_settings, settings_table
from flowpilot_analytics.models import Membership

URL = "/api/v1/analytics/flowpilot/escalations"
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def bare_host(settings):
    """The settings of a host that configured neither the app nor DRF (DRF's own defaults apply)."""
    # Assigning first sends setting_changed (now, and again when restored), which drops the
    # cached values of both settings objects; pytest-django's deletion alone sends nothing.
    settings.FLOWPILOT_ANALYTICS = settings.REST_FRAMEWORK = {}
    del settings.FLOWPILOT_ANALYTICS
    del settings.REST_FRAMEWORK
    return settings


def app_messages(**kwargs):
    return [message for message in run_checks(**kwargs) if message.id.startswith("flowpilot_analytics.")]


# --- Defaults inside the app ------------------------------------------------------------


def test_a_host_that_sets_nothing_gets_every_default(bare_host):
    assert {key: getattr(app_settings, key) for key in DEFAULTS} == {
        "STATEMENT_TIMEOUT_MS": 5000,
        "WORK_MEM": "32MB",
        "THROTTLE_RATE": "120/minute",
        "DB_ALIAS": "default",
        "AUTHENTICATION_CLASSES": None,
        "WIDGET_ACCOUNT_LIMIT": 25,
        "CROSS_ACCOUNT_DB_ALIAS": None,
        "BASE_TEMPLATE": "flowpilot_analytics/base.html",
        "EXPORT_MAX_ROWS": 100_000,
        "EXPORT_MAX_SECONDS": 25,
        "FIELDS": DEFAULT_FIELDS,
        "ACCESS_POLICY": membership_roles,
        "RLS": {"account_setting": None, "user_setting": None, "cross_account_setting": None},
        "BINDING_KEY": None,
        "FIRST_ACTION_INDEX": False,
    }
    assert app_messages() == []


def test_a_key_the_host_sets_overrides_only_that_key(settings):
    settings.FLOWPILOT_ANALYTICS = {"WIDGET_ACCOUNT_LIMIT": 3}
    assert app_settings.WIDGET_ACCOUNT_LIMIT == 3
    assert app_settings.THROTTLE_RATE == "120/minute"


def test_the_old_top_level_names_are_still_read_and_the_dict_wins(settings):
    settings.FLOWPILOT_ANALYTICS = {}
    del settings.FLOWPILOT_ANALYTICS
    settings.FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS = 700
    assert app_settings.STATEMENT_TIMEOUT_MS == 700
    settings.FLOWPILOT_ANALYTICS = {"STATEMENT_TIMEOUT_MS": 900}
    assert app_settings.STATEMENT_TIMEOUT_MS == 900


@pytest.mark.django_db
def test_a_host_that_sets_nothing_is_throttled_at_120_a_minute(bare_host, api_client, member):
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    statuses = [api_client.get(URL).status_code for _ in range(121)]
    assert statuses[:120] == [200] * 120
    assert statuses[120] == 429


@pytest.mark.django_db
def test_the_hosts_rest_framework_throttle_rates_do_not_change_the_apps_rate(settings, api_client, member):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics": "1/minute", "user": "1/minute"},
        "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    }
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": "3/minute"}
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    assert [api_client.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]
    [warning] = [message for message in app_messages() if message.id == "flowpilot_analytics.W005"]
    assert 'FLOWPILOT_ANALYTICS["THROTTLE_RATE"]' in warning.hint


@pytest.mark.django_db
def test_no_throttle_rate_lifts_the_throttle(settings, api_client, member):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": None}
    api_client.force_authenticate(member(Membership.Role.ENGINEER))
    assert {api_client.get(URL).status_code for _ in range(130)} == {200}


# --- Authentication: the host's DRF defaults, unless the app's setting names others --------


@pytest.mark.django_db
def test_with_drfs_defaults_anonymous_is_refused_with_403_and_a_session_works(bare_host, client, member):
    """DRF's defaults put SessionAuthentication first, which sends no WWW-Authenticate: 403."""
    refused = client.get(URL)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Authentication credentials were not provided."}

    client.force_login(member(Membership.Role.ENGINEER))
    assert client.get(URL).status_code == 200


@pytest.mark.django_db
def test_the_demo_project_keeps_tokens_first_and_401(api_client):
    refused = api_client.get(URL)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_the_apps_authentication_classes_replace_the_hosts(settings, api_client, member):
    settings.FLOWPILOT_ANALYTICS = {
        **settings.FLOWPILOT_ANALYTICS,
        "AUTHENTICATION_CLASSES": ["rest_framework.authentication.BasicAuthentication"],
    }
    engineer = member(Membership.Role.ENGINEER)
    engineer.set_password("s3cret-pass")
    engineer.save()

    refused = api_client.get(URL)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Basic realm="api"'
    credentials = base64.b64encode(f"{engineer.username}:s3cret-pass".encode()).decode()
    assert api_client.get(URL, HTTP_AUTHORIZATION=f"Basic {credentials}").status_code == 200
    # The host's token authentication no longer applies to these endpoints.
    api_client.force_login(engineer)
    assert api_client.get(URL).status_code == 401


# --- System checks: a malformed value is refused, naming its key -------------------------


@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("STATEMENT_TIMEOUT_MS", -1, "E010"),
        ("STATEMENT_TIMEOUT_MS", "5s", "E010"),
        ("STATEMENT_TIMEOUT_MS", True, "E010"),
        ("THROTTLE_RATE", "lots", "E011"),
        ("THROTTLE_RATE", "0/minute", "E011"),
        ("THROTTLE_RATE", "10/fortnight", "E011"),
        ("THROTTLE_RATE", 120, "E011"),
        ("DB_ALIAS", "", "E012"),
        ("DB_ALIAS", None, "E012"),
        ("AUTHENTICATION_CLASSES", "rest_framework.authentication.TokenAuthentication", "E013"),
        ("AUTHENTICATION_CLASSES", ["no.such.Authentication"], "E013"),
        ("AUTHENTICATION_CLASSES", ["django.contrib.auth.models.User"], "E013"),
        ("WIDGET_ACCOUNT_LIMIT", 0, "E014"),
        ("WIDGET_ACCOUNT_LIMIT", "25", "E014"),
        ("BASE_TEMPLATE", "", "E016"),
        ("BASE_TEMPLATE", None, "E016"),
        ("BASE_TEMPLATE", "site/no-such-base.html", "E016"),
        # A template without the blocks the dashboard fills: it would render an empty page.
        ("BASE_TEMPLATE", "admin/widgets/clearable_file_input.html", "E016"),
        ("EXPORT_MAX_ROWS", 0, "E017"),
        ("EXPORT_MAX_ROWS", "100000", "E017"),
        ("EXPORT_MAX_SECONDS", 0, "E018"),
        ("EXPORT_MAX_SECONDS", 2.5, "E018"),
        ("FIELDS", ["handoff.claimed_at"], "E019"),
        ("FIELDS", {"handoff.claimed": "taken_at"}, "E019"),
        ("FIELDS", {"handoff.claimed_at": None}, "E019"),
        ("FIELDS", {"handoff.claimed_at": "taken at"}, "E019"),
        ("ACCESS_POLICY", "no.such.policy", "E020"),
        ("ACCESS_POLICY", "flowpilot_analytics.conf.SETTING_NAME", "E020"),
        ("ACCESS_POLICY", None, "E020"),
        ("RLS", None, "E021"),
        ("FIRST_ACTION_INDEX", "yes", "E040"),
        ("FIRST_ACTION_INDEX", 1, "E040"),
        ("RLS", {"account": "app.current_org"}, "E021"),
        ("RLS", {"account_setting": "current_org"}, "E021"),
        ("RLS", {"account_setting": "app.current org"}, "E021"),
        ("WORK_MEM", 32, "E022"),
        ("WORK_MEM", "32 MB", "E022"),
        ("WORK_MEM", "32mb", "E022"),
        ("WORK_MEM", "32kB", "E022"),
        ("WORK_MEM", "3TB", "E022"),
        ("WORK_MEM", "2048GB", "E022"),
        ("WORK_MEM", "32B", "E022"),
        ("WORK_MEM", "", "E022"),
        ("BINDING_KEY", 12345, "E060"),
        ("BINDING_KEY", b"x" * 40, "E060"),
    ],
)
def test_a_malformed_value_is_an_error_naming_the_key(settings, key, value, check_id):
    settings.FLOWPILOT_ANALYTICS = {key: value}
    [error] = app_messages()
    assert error.id == f"flowpilot_analytics.{check_id}"
    assert error.is_serious()
    assert error.msg.startswith(f'FLOWPILOT_ANALYTICS["{key}"] ')
    assert repr(value) in error.msg


def test_a_binding_key_too_short_is_an_error_that_does_not_show_the_secret(settings):
    settings.FLOWPILOT_ANALYTICS = {"BINDING_KEY": "short-secret"}
    [error] = app_messages()
    assert error.id == "flowpilot_analytics.E060"
    assert "short-secret" not in error.msg and "a string of 12 characters" in error.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("STATEMENT_TIMEOUT_MS", 0),
        ("THROTTLE_RATE", "5/s"),
        ("THROTTLE_RATE", None),
        ("AUTHENTICATION_CLASSES", ("rest_framework.authentication.SessionAuthentication",)),
        ("WIDGET_ACCOUNT_LIMIT", 1),
        # The stock admin's layout: its blocks title and content come from the template it extends.
        ("BASE_TEMPLATE", "admin/base_site.html"),
        ("EXPORT_MAX_ROWS", None),
        ("EXPORT_MAX_SECONDS", 600),
        ("BINDING_KEY", "a-binding-key-of-forty-characters-------"),
    ],
)
def test_well_formed_values_pass(settings, key, value):
    settings.FLOWPILOT_ANALYTICS = {key: value}
    assert app_messages() == []


def test_a_setting_that_is_not_a_dict_is_refused(settings):
    settings.FLOWPILOT_ANALYTICS = [("THROTTLE_RATE", "5/s")]
    [error] = app_messages()
    assert error.id == "flowpilot_analytics.E001"
    assert "must be a dict" in error.msg


def test_an_unknown_key_is_a_warning_with_the_likely_one(settings):
    settings.FLOWPILOT_ANALYTICS = {"THROTTLE_RATES": "5/s"}
    [warning] = app_messages()
    assert warning.id == "flowpilot_analytics.W003"
    assert "'THROTTLE_RATES'" in warning.msg
    assert warning.hint == "Did you mean 'THROTTLE_RATE'?"


def test_an_old_top_level_name_is_a_deprecation_warning_and_its_errors_name_it(settings):
    settings.FLOWPILOT_ANALYTICS = {}
    del settings.FLOWPILOT_ANALYTICS
    settings.FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS = -5
    warning, error = sorted(app_messages(), key=lambda message: message.id, reverse=True)
    assert warning.id == "flowpilot_analytics.W004"
    assert warning.hint == 'Set FLOWPILOT_ANALYTICS["STATEMENT_TIMEOUT_MS"] instead.'
    assert error.id == "flowpilot_analytics.E010"
    assert error.msg.startswith("FLOWPILOT_ANALYTICS_STATEMENT_TIMEOUT_MS (deprecated name of "
                                'FLOWPILOT_ANALYTICS["STATEMENT_TIMEOUT_MS"])')


def test_every_key_has_its_own_check_id_and_a_default_that_passes_it():
    ids = [setting.check_id for setting in SETTINGS]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"flowpilot_analytics\.E0[1-9][0-9]", check_id) for check_id in ids)
    for setting in SETTINGS:
        assert setting.validate(setting.default) is None, setting.name
        assert setting.doc and "|" not in setting.doc.replace("\\|", ""), setting.name


def test_the_readme_lists_every_key_with_its_default():
    readme = README.read_text()
    start = readme.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    end = readme.index("<!-- /settings-table -->")
    assert readme[start:end].strip() == settings_table(), (
        "The README's settings table is out of date; paste this between its markers:\n" + settings_table()
    )
