"""The endpoint under abuse: the throttle, the statement timeout, and their settings.

How the app's settings are read and checked in general: ``test_settings.py``.
"""

import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from flowpilot_analytics.api import views
from flowpilot_analytics.models import Membership
from flowpilot_analytics.selectors import escalation_metrics

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/flowpilot/escalations"
SETTINGS_FILE = Path(__file__).resolve().parent.parent / "config" / "settings.py"


@pytest.fixture
def throttle_rate(settings):
    def set_rate(rate):
        settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "THROTTLE_RATE": rate}

    return set_rate


def test_past_the_rate_a_user_gets_429_with_retry_after(api_client, member, throttle_rate):
    throttle_rate("3/minute")
    api_client.force_authenticate(member(Membership.Role.ENGINEER))

    statuses = [api_client.get(URL).status_code for _ in range(3)]
    refused = api_client.get(URL)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    # The period, and at most a sixtieth more (the count is kept per slot: tests/test_throttle.py).
    assert 60 <= int(refused["Retry-After"]) <= 61
    assert "throttled" in refused.json()["detail"].lower()


def test_the_throttle_counts_each_user_apart(api_client, member, throttle_rate):
    throttle_rate("1/minute")
    first, second = member(Membership.Role.ENGINEER), member(Membership.Role.ADMIN)
    api_client.force_authenticate(first)
    assert [api_client.get(URL).status_code for _ in range(2)] == [200, 429]

    api_client.force_authenticate(second)
    assert api_client.get(URL).status_code == 200


@pytest.fixture
def observed_metrics(monkeypatch):
    """The view's metric, recording the statement_timeout it runs under, after an optional pg_sleep."""
    seen = {"timeouts": [], "work_mem": [], "sleep": 0}

    def metrics(*, account, **window):
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            seen["timeouts"].append(cursor.fetchone()[0])
            cursor.execute("SHOW work_mem")
            seen["work_mem"].append(cursor.fetchone()[0])
            if seen["sleep"]:
                cursor.execute("SELECT pg_sleep(%s)", [seen["sleep"]])
        return escalation_metrics(account=account, **window)

    monkeypatch.setattr(views, "escalation_metrics", metrics)
    return seen


@pytest.mark.postgres_only
def test_a_query_cancelled_by_the_statement_timeout_is_503_with_retry_after(
    engineer_client, settings, observed_metrics
):
    """A slow query (pg_sleep, injected before the metric) against the real timeout of PostgreSQL."""
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "STATEMENT_TIMEOUT_MS": 50}
    observed_metrics["sleep"] = 2

    response = engineer_client.get(URL)

    assert observed_metrics["timeouts"] == ["50ms"]
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "cancelled" in response.json()["detail"]

    # The failed transaction was rolled back: the connection serves the next request.
    observed_metrics["sleep"] = 0
    assert engineer_client.get(URL).status_code == 200


def around_a_request(client, setting):
    """``setting`` as the connection shows it before and after a request: ``(before, after)``."""
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {setting}")
        [before] = cursor.fetchone()
        assert client.get(URL).status_code == 200
        cursor.execute(f"SHOW {setting}")
        [after] = cursor.fetchone()
    return before, after


@pytest.mark.postgres_only
def test_the_statement_timeout_follows_the_setting_and_ends_with_the_request(
    engineer_client, settings, observed_metrics
):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "STATEMENT_TIMEOUT_MS": 1234}
    before, after = around_a_request(engineer_client, "statement_timeout")

    assert observed_metrics["timeouts"] == ["1234ms"]
    assert after == before != "1234ms"


@pytest.mark.postgres_only
@pytest.mark.parametrize("work_mem", ["32MB", "1GB", None])
def test_the_requests_work_mem_follows_the_setting_and_ends_with_the_request(
    engineer_client, settings, observed_metrics, work_mem
):
    """The percentiles' sort gets WORK_MEM for the request's transaction only; None keeps the server's."""
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "WORK_MEM": work_mem}
    before, after = around_a_request(engineer_client, "work_mem")

    assert observed_metrics["work_mem"] == [work_mem or before]
    assert after == before


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DJANGO_ANALYTICS_THROTTLE_RATE", "lots"),
        ("DJANGO_ANALYTICS_THROTTLE_RATE", "0/minute"),
        ("DJANGO_ANALYTICS_THROTTLE_RATE", "10/fortnight"),
        ("DJANGO_ANALYTICS_STATEMENT_TIMEOUT_MS", "-1"),
        ("DJANGO_ANALYTICS_STATEMENT_TIMEOUT_MS", "5s"),
        *(
            (variable, value)
            for variable in ("DJANGO_ANALYTICS_EXPORT_MAX_ROWS", "DJANGO_ANALYTICS_EXPORT_MAX_SECONDS")
            for value in ("0", "-5", "many")
        ),
    ],
)
def test_a_bad_setting_stops_the_start_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ImproperlyConfigured, match=variable):
        runpy.run_path(str(SETTINGS_FILE))


def test_the_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_ANALYTICS_THROTTLE_RATE", "500/hour")
    monkeypatch.setenv("DJANGO_ANALYTICS_STATEMENT_TIMEOUT_MS", "0")
    monkeypatch.setenv("DJANGO_ANALYTICS_EXPORT_MAX_ROWS", "250000")
    monkeypatch.setenv("DJANGO_ANALYTICS_EXPORT_MAX_SECONDS", "none")
    loaded = runpy.run_path(str(SETTINGS_FILE))
    assert loaded["FLOWPILOT_ANALYTICS"]["THROTTLE_RATE"] == "500/hour"
    assert loaded["FLOWPILOT_ANALYTICS"]["STATEMENT_TIMEOUT_MS"] == 0
    assert loaded["FLOWPILOT_ANALYTICS"]["EXPORT_MAX_ROWS"] == 250_000
    assert loaded["FLOWPILOT_ANALYTICS"]["EXPORT_MAX_SECONDS"] is None
