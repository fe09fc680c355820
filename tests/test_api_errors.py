"""Every error of the analytics endpoints is its own status in every renderer, never a 500.

The requests here run as served: ``transaction=True``, so no test transaction
wraps them and the request's own transaction really ends before the response
is rendered (on PostgreSQL, where Row-Level Security is bound to it). Also: a
database that goes away (a 503 in JSON with ``Retry-After``, and the next
request served), and a query string with too many parameters.
"""

import io
from datetime import timedelta
from wsgiref.util import setup_testing_defaults

import psycopg
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import InterfaceError, OperationalError, connection, connections
from django.utils import timezone

from flowpilot_analytics.api import views
from flowpilot_analytics.factories import AccountFactory, UserFactory
from flowpilot_analytics.models import Membership
from flowpilot_analytics.selectors import escalation_metrics
from tests.builders import HANDOFFS, URL, claimed_handoff

pytestmark = pytest.mark.django_db(transaction=True)

# How a caller asks for an answer: (query parameters, headers).
RENDERERS = {
    "browser": ({}, {"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}),
    "format=api": ({"format": "api"}, {}),
    "json": ({}, {"HTTP_ACCEPT": "application/json"}),
    "format=csv": ({"format": "csv"}, {}),
    "text/csv": ({}, {"HTTP_ACCEPT": "text/csv"}),
}
HTML = {"browser", "format=api"}


@pytest.fixture
def callers(account, other_account, member):
    """A user of each kind the errors are about, logged in by session as a browser would be."""
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=1), lag=30)
    two = member(Membership.Role.ENGINEER)
    member(Membership.Role.ENGINEER, account=AccountFactory(slug="second"), user=two)
    return {
        "anonymous": None,
        "viewer": member(Membership.Role.VIEWER),
        "staff": UserFactory(is_staff=True, is_superuser=True),
        "two accounts": two,
        "engineer": member(Membership.Role.ENGINEER),
    }


def get(client, user, params, renderer, path=URL):
    if user is not None:
        client.force_login(user)
    query, headers = RENDERERS[renderer]
    return client.get(path, {**params, **query}, **headers)


def assert_rendered(response, renderer, status):
    assert response.status_code == status, response.content[:300]
    content_type = response["Content-Type"]
    if renderer in HTML:
        assert content_type.startswith("text/html")
        assert f"HTTP {status}" in response.content.decode()  # the browsable API's page
    else:
        # An error asked for as CSV is JSON, as the schema documents.
        assert content_type.startswith("application/json")
        assert response.json()


ERRORS = [
    ("anonymous", {}, 401),
    ("viewer", {}, 403),
    ("staff", {}, 403),
    ("two accounts", {}, 400),
    ("engineer", {"account": "a b"}, 400),
    ("engineer", {"account": "999999"}, 404),
    ("engineer", {"period": "14d"}, 400),
]


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("caller, params, status", ERRORS)
def test_every_error_is_its_status_in_every_renderer(client, callers, caller, params, status, renderer):
    assert_rendered(get(client, callers[caller], params, renderer), renderer, status)


@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_foreign_account_is_404_in_every_renderer(client, callers, other_account, renderer):
    response = get(client, callers["engineer"], {"account": other_account.pk}, renderer)
    assert_rendered(response, renderer, 404)


@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_throttled_caller_gets_429_in_every_renderer(client, callers, settings, renderer):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": "1/minute"}
    get(client, callers["engineer"], {}, renderer)
    response = get(client, callers["engineer"], {}, renderer)
    assert_rendered(response, renderer, 429)
    assert response["Retry-After"]


@pytest.mark.parametrize("renderer", ["browser", "format=api", "json"])
def test_a_write_is_405_in_every_renderer(client, callers, renderer):
    client.force_login(callers["engineer"])
    query, headers = RENDERERS[renderer]
    response = client.post(URL + ("?format=api" if query else ""), **headers)
    assert_rendered(response, renderer, 405)


@pytest.mark.postgres_only
@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_statement_timeout_is_503_in_every_renderer(client, callers, settings, monkeypatch, renderer):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "STATEMENT_TIMEOUT_MS": 50}

    def slow_metrics(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")

    monkeypatch.setattr(views, "escalation_metrics", slow_metrics)
    response = get(client, callers["engineer"], {}, renderer)
    assert_rendered(response, renderer, 503)
    assert response["Retry-After"] == "30"


def test_a_viewer_logging_in_through_the_browsable_api_lands_on_a_403_page(client, callers):
    viewer = callers["viewer"]
    viewer.set_password("flowpilot-test")
    viewer.save()
    browser = RENDERERS["browser"][1]

    # As the browsable API's "Log in" link sends it: back to the page it came from.
    response = client.post(
        f"/api-auth/login/?next={URL}",
        {"username": viewer.username, "password": "flowpilot-test", "next": URL},
        follow=True,
        **browser,
    )

    assert response.redirect_chain == [(URL, 302)]
    assert_rendered(response, "browser", 403)


# --- A database that goes away -----------------------------------------------------------------


def assert_database_unavailable(response):
    """A 503 in JSON, whatever was asked for, saying to retry."""
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert response["Retry-After"] == "5"
    assert "database" in response.json()["detail"]


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("consuming input failed: server closed the connection unexpectedly"),
        OperationalError("terminating connection due to administrator command"),
        InterfaceError("connection already closed"),
    ],
    ids=["closed", "terminated", "interface"],
)
@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_lost_connection_during_the_query_is_503_in_json(client, callers, monkeypatch, error, renderer):
    def lost(**kwargs):
        raise error

    monkeypatch.setattr(views, "escalation_metrics", lost)
    assert_database_unavailable(get(client, callers["engineer"], {}, renderer))


@pytest.mark.parametrize("renderer", ["browser", "json"])
def test_a_database_that_cannot_be_reached_is_503_in_json(client, callers, monkeypatch, renderer):
    """Refused before anything is read: no transaction can be opened, no token looked up."""
    user = callers["engineer"]
    client.force_login(user)

    def refused(*args, **kwargs):
        raise OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed')

    monkeypatch.setattr(connections["default"], "ensure_connection", refused)
    query, headers = RENDERERS[renderer]
    response = client.get(URL, query, **headers)
    monkeypatch.undo()

    assert_database_unavailable(response)
    assert client.get(URL).status_code == 200


def terminate_backend(pid):
    """``pg_terminate_backend`` from a second connection, as an administrator (or a failover) would."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


@pytest.mark.postgres_only
@pytest.mark.parametrize("renderer", ["browser", "json", "format=csv"])
def test_a_backend_terminated_during_a_request_is_503_and_the_next_request_is_served(
    client, callers, monkeypatch, renderer
):
    def metrics_after_kill(**kwargs):
        terminate_backend(connection.connection.info.backend_pid)
        return escalation_metrics(**kwargs)

    monkeypatch.setattr(views, "escalation_metrics", metrics_after_kill)
    assert_database_unavailable(get(client, callers["engineer"], {}, renderer))

    monkeypatch.undo()
    recovered = get(client, callers["engineer"], {}, "json")
    assert recovered.status_code == 200 and recovered.json()["n_handoffs_claimed"] == 1


def wsgi_get(path, token):
    """One request through Django's WSGI handler as a server sends it (its signals close or keep
    connections, as they do when served)."""
    environ = {"PATH_INFO": path, "HTTP_AUTHORIZATION": f"Token {token}", "HTTP_ACCEPT": "text/html"}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"] = int(status.split()[0])
        started["headers"] = dict(headers)

    body = b"".join(WSGIHandler()(environ, start_response))
    return started["status"], started["headers"], body


@pytest.mark.postgres_only
@pytest.mark.parametrize("health_checks, statuses", [(True, [200, 200]), (False, [503, 200])])
def test_a_kept_alive_connection_terminated_while_idle(callers, monkeypatch, health_checks, statuses):
    """``CONN_MAX_AGE`` > 0, as served. With ``CONN_HEALTH_CHECKS`` (the demo's setting) Django
    replaces the dead connection before the request's transaction opens on it; without, that
    request is a 503 in JSON and the next one is served on a new connection."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=callers["engineer"]).key
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", health_checks)
    connection.close()
    try:
        assert wsgi_get(URL, token)[0] == 200
        pid = connection.connection.info.backend_pid  # kept alive for the next request
        terminate_backend(pid)

        answers = [wsgi_get(URL, token) for _ in statuses]

        assert [status for status, _, _ in answers] == statuses, answers[0][2][:300]
        for status, headers, _ in answers:
            expected = "application/json" if status == 503 else "text/html; charset=utf-8"
            assert headers["Content-Type"] == expected
        assert connection.connection.info.backend_pid != pid
    finally:
        connection.close()


# --- Too many query parameters ------------------------------------------------------------------


def many_parameters(count):
    return "&".join(f"p{index}=1" for index in range(count))


@pytest.mark.parametrize("renderer", RENDERERS)
def test_more_query_parameters_than_django_reads_is_a_400_in_json_naming_the_problem(
    client, callers, settings, renderer
):
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    client.force_login(callers["engineer"])
    query, headers = RENDERERS[renderer]
    extra = "".join(f"&{name}={value}" for name, value in query.items())
    response = client.get(f"{URL}?{many_parameters(limit + 1)}{extra}", **headers)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert str(limit) in response.json()["query"][0]

    at_the_limit = client.get(f"{URL}?{many_parameters(limit - len(query))}{extra}", **headers)
    # Django reads them all; the endpoint then refuses the first it does not know, by name.
    assert at_the_limit.status_code == 400
    assert b"Unknown parameter" in at_the_limit.content and b"p0" in at_the_limit.content


@pytest.mark.parametrize("renderer", ["browser", "json"])
def test_an_anonymous_caller_with_too_many_parameters_gets_401_first(client, settings, renderer):
    headers = RENDERERS[renderer][1]
    response = client.get(f"{URL}?{many_parameters(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}", **headers)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response["WWW-Authenticate"] == "Token"


def test_too_many_parameters_on_the_drill_down_csv_is_json_too(client, callers, settings):
    client.force_login(callers["engineer"])
    response = client.get(f"{HANDOFFS}?format=csv&{many_parameters(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS)}")
    assert response.status_code == 400 and "query" in response.json()


# --- A format that cannot be given ---------------------------------------------------------------


@pytest.mark.parametrize(
    "query, accept",
    [({"format": "xml"}, "application/json"), ({"format": "json"}, "text/csv"), ({}, "image/png")],
    ids=["unknown format", "format against Accept", "Accept nothing meets"],
)
def test_a_format_that_cannot_be_given_is_answered_after_authentication(client, callers, query, accept):
    anonymous = client.get(URL, query, HTTP_ACCEPT=accept)
    assert anonymous.status_code == 401 and anonymous["Content-Type"] == "application/json"

    client.force_login(callers["engineer"])
    refused = client.get(URL, query, HTTP_ACCEPT=accept)
    assert refused["Content-Type"] == "application/json"
    if "format" in query and query["format"] == "xml":
        assert refused.status_code == 400 and refused.json() == {"format": ["Allowed values: json, csv."]}
    else:
        assert refused.status_code == 406 and "Accept" in refused.json()["detail"]


@pytest.fixture
def reconnecting_fails(monkeypatch):
    """Arms a database gone once the request's work is done: restoring autocommit (a reconnect)
    fails, once."""
    wrapper = connections["default"]
    real = wrapper.set_autocommit

    def set_autocommit(autocommit, *args, **kwargs):
        if autocommit:
            monkeypatch.setattr(wrapper, "set_autocommit", real)
            raise OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed')
        return real(autocommit, *args, **kwargs)

    yield lambda: monkeypatch.setattr(wrapper, "set_autocommit", set_autocommit)
    # SQLite's in-memory test database is never closed: put back what the failure left.
    if wrapper.connection is not None and not wrapper.in_atomic_block and not wrapper.get_autocommit():
        real(True)


def test_a_database_lost_as_the_request_ends_keeps_the_answer_already_made(
    client, callers, reconnecting_fails
):
    client.force_login(callers["engineer"])
    reconnecting_fails()
    response = client.get(URL, HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    if connection.vendor == "postgresql":
        assert connection.connection is None  # dropped, not left without autocommit
    assert client.get(URL).status_code == 200


def test_a_database_lost_during_and_after_the_request_is_a_503(
    client, callers, monkeypatch, reconnecting_fails
):
    def lost(**kwargs):
        raise OperationalError("consuming input failed: server closed the connection unexpectedly")

    monkeypatch.setattr(views, "escalation_metrics", lost)
    client.force_login(callers["engineer"])
    reconnecting_fails()
    assert_database_unavailable(client.get(URL, HTTP_ACCEPT="text/html"))
