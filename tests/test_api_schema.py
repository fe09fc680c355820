"""The OpenAPI schema, its readers, and Schemathesis testing the live app against it as every role."""

import os
from datetime import timedelta

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, connection
from django.utils import timezone
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from flowpilot_analytics.factories import AccountFactory, UserFactory
from flowpilot_analytics.models import Membership
from tests.builders import claimed_handoff

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/flowpilot/escalations"
SCHEMA_URL = "/api/schema/"
ERROR_STATUSES = {"400", "401", "403", "404", "406", "429", "503"}

# The schema as the running app serves it, loaded in-process through WSGI.
application = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, application)


def operation(client):
    body = client.get(SCHEMA_URL, {"format": "json"}).json()
    return body, body["paths"][URL]["get"]


def test_the_schema_documents_period_as_an_enum_and_every_error(client):
    body, get = operation(client)

    assert body["openapi"].startswith("3.")
    accounts = URL.replace("escalations", "accounts")
    assert set(body["paths"]) == {URL, URL + "/trend", URL + "/by-engineer", URL + "/handoffs", accounts}
    for path in body["paths"].values():
        assert set(path) == {"get"}, "read-only: no write operation is documented"
    # The list of one's accounts has no window, no account to name and no 404.
    assert set(body["paths"][accounts]["get"]["responses"]) == {"200"} | ERROR_STATUSES - {"404"}
    for url in (URL, URL + "/trend", URL + "/by-engineer", URL + "/handoffs"):
        get = body["paths"][url]["get"]
        period = next(parameter for parameter in get["parameters"] if parameter["name"] == "period")
        assert sorted(period["schema"]["enum"]) == ["30d", "7d", "90d"]
        assert period["schema"]["default"] == "30d"
        assert set(get["responses"]) == {"200"} | ERROR_STATUSES
        for status in ERROR_STATUSES:
            assert get["responses"][status]["description"], status
            assert "application/json" in get["responses"][status]["content"], status
    components = body["components"]["schemas"]
    period = components["EscalationMetrics"]["properties"]["period"]
    period_enum = (period.get("$ref") or period["allOf"][0]["$ref"]).rsplit("/", 1)[1]
    # The answer's period: the one asked for, or "custom" for a start/end window.
    assert components[period_enum]["enum"] == ["7d", "30d", "90d", "custom"]


@pytest.mark.parametrize("page", ["/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_the_schema_readers_load_no_asset_from_outside(client, page, settings):
    response = client.get(page)
    html = response.content.decode()

    assert response.status_code == 200
    assert "drf_spectacular_sidecar" in html
    assert "http://" not in html.replace("http://testserver", "") and "https://" not in html
    for asset in [word.split('"')[0] for word in html.split('src="')[1:]]:
        assert asset.startswith(settings.STATIC_URL + "drf_spectacular_sidecar/"), asset
        # Shipped by drf-spectacular-sidecar: runserver serves it, collectstatic copies it.
        assert finders.find(asset.removeprefix(settings.STATIC_URL)), asset


# --- Schemathesis, as each role ---------------------------------------------------------

ROLES = ["anonymous", "non-member", "viewer", "engineer", "admin", "two accounts", "staff"]


@pytest.fixture
def wsgi_keeps_test_connection():
    """As Django's test client does: the WSGI handler must not close the test's connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def role_headers(account, member, settings, request, wsgi_keeps_test_connection):
    """Authorization headers of each role, over an account with data; as the app role on PostgreSQL."""
    # Fuzzing is many requests from one user: lift the throttle (its 429 is in the schema anyway).
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": None}
    now = timezone.now()
    for days, lag in [(1, 12.5), (10, 40), (50, 300)]:
        claimed_handoff(account, claimed_at=now - timedelta(days=days), lag=lag)
    claimed_handoff(account, claimed_at=now - timedelta(days=2))
    two = member(Membership.Role.ENGINEER)
    member(Membership.Role.ADMIN, account=AccountFactory(slug="second"), user=two)
    users = {
        "non-member": UserFactory(),
        "viewer": member(Membership.Role.VIEWER),
        "engineer": member(Membership.Role.ENGINEER),
        "admin": member(Membership.Role.ADMIN),
        "two accounts": two,
        "staff": UserFactory(is_staff=True, is_superuser=True),
    }
    headers = {role: {"Authorization": f"Token {Token.objects.create(user=user).key}"} for role, user in users.items()}
    headers["anonymous"] = {}
    if connection.vendor == "postgresql":
        request.getfixturevalue("become_app_role")()
    return headers


def fuzzing(max_examples):
    """Hypothesis's settings of a Schemathesis test here."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        # CI replays the same examples on every run; elsewhere each run explores anew.
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@schema.parametrize()
@fuzzing(max_examples=40)
@pytest.mark.parametrize("role", ROLES)
def test_the_api_conforms_to_its_schema(case, role, role_headers, schemathesis_examples):
    schemathesis_examples[role] += 1
    # A member of several accounts must name one (400): a condition OpenAPI cannot
    # express, so "schema-valid data is accepted" does not hold for that role alone.
    # Likewise the window's rules across parameters (period or start and end, not
    # both; start before end; at most 366 days; an IANA time zone), and the value
    # ranges OpenAPI 3.0 cannot tie together: those requests are checked for no
    # 5xx and a conforming answer, but a 400 is theirs to give.
    # claimed_by is another such condition: an engineer may name only themselves (403
    # otherwise), and a cursor is valid only as the API gave it out.
    cross_field = set(case.query or {}) - {
        "period", "account", "interval", "ordering", "has_action", "page_size", "format"
    }
    excluded = (
        [schemathesis.checks.positive_data_acceptance] if role == "two accounts" or cross_field else []
    )
    response = case.call_and_validate(headers=role_headers[role], excluded_checks=excluded)
    assert response.status_code < 500


# A browser's Accept header: the browsable API's HTML renderer answers, errors included.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@schema.parametrize()
@fuzzing(max_examples=20)
@pytest.mark.parametrize("role", ROLES)
def test_no_answer_is_a_server_error_when_a_browser_asks(case, role, role_headers, schemathesis_examples):
    """As the schema's test above, with a browser's Accept: HTML is not in the schema, so only no 5xx.

    The same as an outside client against a served app: `make served-check`.
    """
    schemathesis_examples[f"{role} (html)"] += 1
    response = case.call(headers={**role_headers[role], "Accept": BROWSER_ACCEPT})
    assert response.status_code < 500, response.text[:500]


# --- The fields of every answer, pinned -------------------------------------------------

# Each component of the schema: its fields in order, with their types ("?" when the
# field may be absent, "|null" when it may be null). Clients are generated from these:
# a field may be added, never renamed, dropped, moved or retyped.
WINDOW = [
    ("window_start", "string:date-time"), ("window_end", "string:date-time"),
    ("window_end_inclusive", "boolean"), ("time_zone", "string"), ("window_field", "string"),
]
CONTRACT_FIGURES = [
    ("n_handoffs_claimed", "integer"), ("n_handoffs_with_action", "integer"),
    ("avg_seconds_to_first_action", "number:double|null"), ("median_seconds_to_first_action", "number:double|null"),
    ("p95_seconds_to_first_action", "number:double|null"),
]
MORE_FIGURES = [
    ("p75_seconds_to_first_action", "number:double|null"), ("p90_seconds_to_first_action", "number:double|null"),
    ("max_seconds_to_first_action", "number:double|null"), ("n_handoffs_without_action", "integer"),
    ("action_rate", "number:double|null"), ("oldest_waiting_seconds", "number:double|null"),
    ("distribution", "[DistributionBucket]"),
]
TARGET_FIGURES = [
    ("target_seconds", "number:double|null"), ("n_handoffs_within_target", "integer|null"),
    ("within_target_rate", "number:double|null"),
]
PINNED_COMPONENTS = {
    "Account": [("id", "integer"), ("slug", "string|null"), ("name", "string"), ("role", "RoleEnum")],
    "AccountsOutput": [("accounts", "[Account]")],
    "AccountNotFound": [("account", "string")],
    "Change": [
        ("n_handoffs_claimed", "integer|null"), ("n_handoffs_with_action", "integer|null"),
        ("n_handoffs_without_action", "integer|null"), ("action_rate", "number:double|null"),
        ("avg_seconds_to_first_action", "number:double|null"), ("median_seconds_to_first_action", "number:double|null"),
        ("p75_seconds_to_first_action", "number:double|null"), ("p90_seconds_to_first_action", "number:double|null"),
        ("p95_seconds_to_first_action", "number:double|null"), ("max_seconds_to_first_action", "number:double|null"),
        ("within_target_rate", "number:double|null"),
    ],
    "Detail": [("detail", "string")],
    "DistributionBucket": [
        ("bucket", "BucketEnum"), ("min_seconds", "integer"), ("max_seconds", "integer|null"), ("count", "integer"),
    ],
    "EngineerFigures": [
        ("engineer_id", "integer|null"), ("engineer_name", "string"), *CONTRACT_FIGURES, *MORE_FIGURES,
    ],
    "EscalationHandoffsOutput": [
        ("period", "PeriodEnum"), *WINDOW, ("clock", "ClockEnum"), ("ordering", "OrderingEnum"), ("next", "string:uri|null"),
        ("next_cursor", "string|null"), ("results", "[HandoffRow]"), ("metric_definition", "string"),
    ],
    "EscalationMetrics": [
        ("period", "PeriodEnum"), *WINDOW, ("clock", "ClockEnum"), *CONTRACT_FIGURES, *MORE_FIGURES, *TARGET_FIGURES,
        ("metric_definition", "string"), ("previous", "PreviousWindow?"), ("change", "Change?"),
    ],
    "EscalationTrendOutput": [
        ("period", "PeriodEnum"), *WINDOW, ("clock", "ClockEnum"), ("interval", "IntervalEnum"), ("buckets", "[TrendBucket]"),
        ("metric_definition", "string"),
    ],
    "EscalationsByEngineerOutput": [
        ("period", "PeriodEnum"), *WINDOW, ("clock", "ClockEnum"), ("engineers", "[EngineerFigures]"), ("metric_definition", "string"),
    ],
    "FieldErrors": [("period", "[string]?"), ("account", "[string]?")],
    "HandoffRow": [
        ("handoff_id", "integer"), ("session_id", "integer"), ("claimed_at", "string:date-time"),
        ("claimed_by_id", "integer|null"), ("claimed_by_name", "string"),
        ("first_action_at", "string:date-time|null"), ("seconds_to_first_action", "number:double|null"),
    ],
    "PreviousWindow": [*WINDOW, *CONTRACT_FIGURES, *MORE_FIGURES, *TARGET_FIGURES],
    "TrendBucket": [
        ("range_start", "string:date-time"), ("range_end", "string:date-time"), *CONTRACT_FIGURES,
        ("action_rate", "number:double|null"), *TARGET_FIGURES,
    ],
}
PINNED_ENUMS = {
    "ClockEnum": ["calendar", "business"],
    "BucketEnum": ["under_1m", "1m_to_5m", "5m_to_15m", "15m_to_60m", "1h_to_4h", "4h_to_24h", "over_24h"],
    "IntervalEnum": ["day", "week"],
    "OrderingEnum": ["-claimed_at", "claimed_at", "-seconds_to_first_action", "seconds_to_first_action"],
    "PeriodEnum": ["7d", "30d", "90d", "custom"],
    "RoleEnum": ["viewer", "engineer", "admin"],
}


def signature(prop):
    """A property's type in one string: a component's name, a list of one, or type:format; |null if nullable."""
    nullable = "|null" if prop.get("nullable") else ""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[1]
    if "allOf" in prop:
        return prop["allOf"][0]["$ref"].rsplit("/", 1)[1] + nullable
    if prop.get("type") == "array":
        return f"[{signature(prop['items'])}]"
    return prop["type"] + (f":{prop['format']}" if "format" in prop else "") + nullable


def test_every_answers_fields_keep_their_names_order_and_types(client):
    components = client.get(SCHEMA_URL, {"format": "json"}).json()["components"]["schemas"]

    fields = {
        name: [
            (field, signature(prop) + ("" if field in component.get("required", ()) else "?"))
            for field, prop in component["properties"].items()
        ]
        for name, component in components.items()
        if "properties" in component
    }
    assert fields == PINNED_COMPONENTS
    assert {name: component["enum"] for name, component in components.items() if "enum" in component} == PINNED_ENUMS
