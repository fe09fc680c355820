"""Summary windows, the wider distribution, coverage, targets and compare=previous (issue 6) (core suite)."""

from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as django_timezone

from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.access import Role
from flowpilot_analytics.stats import LAG_BUCKETS
from tests.builders import BAD_QUERIES, claimed_handoff

pytestmark = [pytest.mark.django_db, pytest.mark.core]

URL = "/api/v1/analytics/flowpilot/escalations"
UTC = timezone.utc
MARCH_1 = datetime(2026, 3, 1, tzinfo=UTC)


def get(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def march(account):
    """Lags 10 s, 2 min, 20 min, 2 h on 1-4 March (UTC noon), one claimed without action on 5 March."""
    for day, lag in enumerate([10, 120, 1200, 7200]):
        claimed_handoff(account, claimed_at=MARCH_1 + timedelta(days=day, hours=12), lag=lag)
    claimed_handoff(account, claimed_at=MARCH_1 + timedelta(days=4, hours=12))
    return account


def test_start_and_end_dates_make_a_half_open_window(engineer_client, march):
    body = get(engineer_client, start="2026-03-01", end="2026-03-03")

    assert body["period"] == "custom"
    assert (body["window_start"], body["window_end"]) == ("2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z")
    assert body["window_end_inclusive"] is False
    assert body["window_field"] == "claimed_at"
    assert body["time_zone"] == "UTC"
    assert (body["n_handoffs_claimed"], body["median_seconds_to_first_action"]) == (2, 65.0)
    assert body["metric_definition"] == METRIC_DEFINITION


def test_end_is_exclusive_and_start_inclusive_to_the_microsecond(engineer_client, march):
    noon_2 = "2026-03-02T12:00:00Z"
    assert get(engineer_client, start="2026-03-01", end=noon_2)["n_handoffs_claimed"] == 1
    assert get(engineer_client, start=noon_2, end="2026-03-10")["n_handoffs_claimed"] == 4


def test_time_zone_decides_where_a_date_starts(engineer_client, account):
    # 23:30 UTC on 1 March is 2 March in Tokyo.
    claimed_handoff(account, claimed_at=datetime(2026, 3, 1, 23, 30, tzinfo=UTC), lag=5)
    tokyo = get(engineer_client, start="2026-03-02", end="2026-03-03", time_zone="Asia/Tokyo")
    utc = get(engineer_client, start="2026-03-02", end="2026-03-03")

    assert (tokyo["n_handoffs_claimed"], utc["n_handoffs_claimed"]) == (1, 0)
    assert tokyo["window_start"] == "2026-03-02T00:00:00+09:00"
    assert tokyo["time_zone"] == "Asia/Tokyo"


def test_period_windows_state_the_window_they_used(engineer_client):
    before = django_timezone.now()
    body = get(engineer_client, period="7d")
    end = datetime.fromisoformat(body["window_end"])
    start = datetime.fromisoformat(body["window_start"])

    assert body["period"] == "7d" and body["window_end_inclusive"] is True
    assert before <= end <= django_timezone.now()
    assert end - start == timedelta(days=7)


def test_the_wider_distribution_and_coverage(engineer_client, march):
    body = get(engineer_client, start="2026-03-01", end="2026-03-06")

    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"]) == (5, 4)
    assert body["n_handoffs_without_action"] == 1
    assert body["action_rate"] == 0.8
    # lags 10, 120, 1200, 7200: ranks at 0.75 * 3 = 2.25 and 0.9 * 3 = 2.7
    assert body["p75_seconds_to_first_action"] == 1200 + 0.25 * 6000
    assert body["p90_seconds_to_first_action"] == 1200 + 0.7 * 6000
    assert body["max_seconds_to_first_action"] == 7200.0
    assert [bucket["bucket"] for bucket in body["distribution"]] == [key for key, _, _ in LAG_BUCKETS]
    assert [bucket["count"] for bucket in body["distribution"]] == [1, 1, 0, 1, 1, 0, 0]
    assert sum(bucket["count"] for bucket in body["distribution"]) == body["n_handoffs_with_action"]
    assert body["distribution"][1] == {"bucket": "1m_to_5m", "min_seconds": 60, "max_seconds": 300, "count": 1}


def test_oldest_waiting_is_the_age_now_of_the_oldest_claim_without_action(engineer_client, march):
    body = get(engineer_client, start="2026-03-01", end="2026-03-06")
    expected = (django_timezone.now() - (MARCH_1 + timedelta(days=4, hours=12))).total_seconds()

    assert expected - 60 <= body["oldest_waiting_seconds"] <= expected
    assert get(engineer_client, start="2026-03-01", end="2026-03-05")["oldest_waiting_seconds"] is None


def test_target_attainment(engineer_client, march):
    body = get(engineer_client, start="2026-03-01", end="2026-03-06", target_seconds="120")

    assert body["target_seconds"] == 120.0
    assert body["n_handoffs_within_target"] == 2  # 10 s and 120 s: the target itself is met
    assert body["within_target_rate"] == 0.5
    without = get(engineer_client, start="2026-03-01", end="2026-03-06")
    assert without["target_seconds"] is None and without["within_target_rate"] is None


def test_compare_previous_adds_the_window_just_before_and_the_change(engineer_client, march):
    body = get(engineer_client, start="2026-03-03", end="2026-03-05", compare="previous")

    previous = body["previous"]
    assert (previous["window_start"], previous["window_end"]) == ("2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z")
    assert (previous["n_handoffs_claimed"], previous["median_seconds_to_first_action"]) == (2, 65.0)
    assert (body["n_handoffs_claimed"], body["median_seconds_to_first_action"]) == (2, 4200.0)
    assert body["change"]["n_handoffs_claimed"] == 0
    assert body["change"]["median_seconds_to_first_action"] == 4135.0
    assert body["change"]["within_target_rate"] is None
    assert "previous" not in get(engineer_client, start="2026-03-03", end="2026-03-05")


def test_compare_previous_of_a_period_does_not_count_the_shared_edge_twice(engineer_client, account):
    now = django_timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=8), lag=1)
    body = get(engineer_client, period="7d", compare="previous")
    assert (body["n_handoffs_claimed"], body["previous"]["n_handoffs_claimed"]) == (0, 1)
    assert body["previous"]["window_end_inclusive"] is False
    assert body["change"]["median_seconds_to_first_action"] is None




@pytest.mark.parametrize(("params", "field"), BAD_QUERIES)
def test_bad_window_parameters_are_400_naming_the_field(engineer_client, params, field):
    response = engineer_client.get(URL, params)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize("name", ["start", "end", "time_zone", "target_seconds", "compare"])
def test_repeated_window_parameters_are_400(engineer_client, name):
    value = {"start": "2026-03-01", "end": "2026-03-02", "time_zone": "UTC", "target_seconds": "5",
             "compare": "previous"}[name]
    response = engineer_client.get(f"{URL}?{name}={value}&{name}={value}")
    assert response.status_code == 400
    assert name in response.json()


def test_window_parameters_keep_the_access_rules(api_client, member, march):
    api_client.force_authenticate(member(Role.VIEWER))
    assert api_client.get(URL, {"start": "2026-03-01", "end": "2026-03-06"}).status_code == 403
    api_client.force_authenticate(None)
    assert api_client.get(URL, {"start": "2026-03-01", "end": "2026-03-06"}).status_code == 401


def test_a_datetime_with_offset_is_an_instant_whatever_the_time_zone(engineer_client, march):
    body = get(engineer_client, start="2026-03-02T13:00:00+01:00", end="2026-03-03", time_zone="America/Denver")
    assert body["window_start"] == "2026-03-02T05:00:00-07:00"
    assert body["n_handoffs_claimed"] == 1  # noon UTC on 2 March is included


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        (URL, {"start": "0001-01-01", "end": "0001-01-02", "time_zone": "Asia/Tokyo"}, "start"),
        (URL, {"start": "0001-01-01T00:00+14:00", "end": "2026-01-02"}, "start"),
        (URL, {"start": "0001-01-02", "end": "0001-03-01", "compare": "previous"}, "start"),
        (URL, {"start": "2026-01-01", "end": "9999-12-31T23:00-05:00"}, "end"),
        (URL + "/trend", {"start": "9999-12-01", "end": "9999-12-31T12:00Z"}, "start"),
        (URL + "/handoffs", {"start": "0001-01-01T00:00Z", "end": "0001-01-02T00:00Z", "format": "csv",
                             "time_zone": "America/New_York"}, "start"),
    ],
)
def test_instants_near_the_ends_of_the_calendar_are_400_not_500(engineer_client, url, params, field):
    response = engineer_client.get(url, params)
    assert response.status_code == 400
    assert field in response.json()
