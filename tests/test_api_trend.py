"""GET .../escalations/trend: one row per local day or week, empty ones included (issue 6) (core suite)."""

from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics.access import Role
from tests.builders import claimed_handoff

pytestmark = [pytest.mark.django_db, pytest.mark.core]

URL = "/api/v1/analytics/flowpilot/escalations/trend"
SUMMARY_URL = "/api/v1/analytics/flowpilot/escalations"
UTC = timezone.utc


def get(client, url=URL, **params):
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return response.json()


def hours(bucket):
    start, end = (datetime.fromisoformat(bucket[name]) for name in ("range_start", "range_end"))
    return (end - start) / timedelta(hours=1)


def test_daily_buckets_with_empty_days_present(engineer_client, account):
    for day, lag in [(0, 10), (0, 30), (2, 60)]:
        claimed_handoff(account, claimed_at=datetime(2026, 3, 1 + day, 9, tzinfo=UTC), lag=lag)
    claimed_handoff(account, claimed_at=datetime(2026, 3, 3, 10, tzinfo=UTC))

    body = get(engineer_client, start="2026-03-01", end="2026-03-05")

    assert body["interval"] == "day" and body["window_field"] == "claimed_at"
    assert [bucket["range_start"][:10] for bucket in body["buckets"]] == [
        "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"
    ]
    first, empty, third, _ = body["buckets"]
    assert (first["n_handoffs_claimed"], first["median_seconds_to_first_action"]) == (2, 20.0)
    assert empty == {
        "range_start": "2026-03-02T00:00:00Z",
        "range_end": "2026-03-03T00:00:00Z",
        "n_handoffs_claimed": 0,
        "n_handoffs_with_action": 0,
        "avg_seconds_to_first_action": None,
        "median_seconds_to_first_action": None,
        "p95_seconds_to_first_action": None,
        "action_rate": None,
        "target_seconds": None,
        "n_handoffs_within_target": None,
        "within_target_rate": None,
    }
    assert (third["n_handoffs_claimed"], third["n_handoffs_with_action"]) == (2, 1)
    assert (first["action_rate"], third["action_rate"]) == (1.0, 0.5)


def test_bucket_counts_add_up_to_the_summary(engineer_client, account):
    now = django_timezone.now()
    for index in range(40):
        claimed_handoff(account, claimed_at=now - timedelta(hours=index * 5 + 1), lag=None if index % 4 else index)

    for period in ("7d", "30d"):
        trend = get(engineer_client, period=period)
        summary = get(engineer_client, SUMMARY_URL, period=period)
        assert sum(b["n_handoffs_claimed"] for b in trend["buckets"]) == summary["n_handoffs_claimed"]
        assert sum(b["n_handoffs_with_action"] for b in trend["buckets"]) == summary["n_handoffs_with_action"]
        assert (trend["window_start"], trend["period"]) == (trend["window_start"], period)


def test_dst_days_are_23_and_25_hours_and_claims_land_on_their_local_day(engineer_client, account):
    # Berlin: 29 March 2026 has 23 hours, 25 October 2026 has 25.
    late_on_28 = datetime(2026, 3, 28, 22, 59, tzinfo=UTC)  # 23:59 CET, 28 March
    early_on_29 = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET, 29 March
    for claimed_at in (late_on_28, early_on_29):
        claimed_handoff(account, claimed_at=claimed_at, lag=1)

    spring = get(engineer_client, start="2026-03-28", end="2026-03-31", time_zone="Europe/Berlin")
    autumn = get(engineer_client, start="2026-10-24", end="2026-10-27", time_zone="Europe/Berlin")

    assert [hours(bucket) for bucket in spring["buckets"]] == [24, 23, 24]
    assert [hours(bucket) for bucket in autumn["buckets"]] == [24, 25, 24]
    assert [bucket["n_handoffs_claimed"] for bucket in spring["buckets"]] == [1, 1, 0]
    assert spring["buckets"][1]["range_start"] == "2026-03-29T00:00:00+01:00"
    assert spring["buckets"][2]["range_start"] == "2026-03-30T00:00:00+02:00"


def test_weekly_buckets_start_on_monday_in_the_callers_zone(engineer_client, account):
    claimed_handoff(account, claimed_at=datetime(2026, 3, 9, 3, tzinfo=UTC), lag=3)  # 23:00 on Sunday 8th in New York
    body = get(engineer_client, start="2026-03-02", end="2026-03-16", interval="week", time_zone="America/New_York")

    assert [bucket["range_start"] for bucket in body["buckets"]] == [
        "2026-03-02T00:00:00-05:00",
        "2026-03-09T00:00:00-04:00",
    ]
    assert [bucket["n_handoffs_claimed"] for bucket in body["buckets"]] == [1, 0]


def test_a_window_not_on_a_day_edge_counts_only_its_own_claims(engineer_client, account):
    claimed_handoff(account, claimed_at=datetime(2026, 3, 1, 6, tzinfo=UTC), lag=1)
    claimed_handoff(account, claimed_at=datetime(2026, 3, 1, 18, tzinfo=UTC), lag=1)
    body = get(engineer_client, start="2026-03-01T12:00:00Z", end="2026-03-02T12:00:00Z")

    assert [bucket["n_handoffs_claimed"] for bucket in body["buckets"]] == [1, 0]
    assert body["buckets"][0]["range_start"] == "2026-03-01T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "month"}, "interval"),
        ({"interval": ""}, "interval"),
        ({"interval": "day", "period": "7d", "start": "2026-03-01", "end": "2026-03-02"}, "period"),
        ({"start": "2026-03-05", "end": "2026-03-01"}, "end"),
        ({"time_zone": "Europe/Nowhere"}, "time_zone"),
        ({"period": "14d"}, "period"),
    ],
)
def test_bad_trend_parameters_are_400_naming_the_field(engineer_client, params, field):
    response = engineer_client.get(URL, params)
    assert response.status_code == 400
    assert field in response.json()


def test_trend_keeps_the_access_rules(api_client, member, account, other_account):
    api_client.force_authenticate(member(Role.VIEWER))
    assert api_client.get(URL).status_code == 403
    api_client.force_authenticate(member(Role.ENGINEER))
    assert api_client.get(URL, {"account": other_account.pk}).status_code == 404
    assert api_client.post(URL).status_code == 405
    api_client.force_authenticate(None)
    assert api_client.get(URL).status_code == 401


def test_other_accounts_never_appear_in_the_trend(engineer_client, account, other_account):
    claimed_handoff(other_account, claimed_at=datetime(2026, 3, 1, 9, tzinfo=UTC), lag=5)
    body = get(engineer_client, start="2026-03-01", end="2026-03-02")
    assert body["buckets"][0]["n_handoffs_claimed"] == 0


def test_query_count_does_not_grow_with_handoffs_or_buckets(api_client, member, account, django_assert_num_queries):
    token = Token.objects.create(user=member(Role.ENGINEER))
    headers = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    now = django_timezone.now()

    claimed_handoff(account, claimed_at=now - timedelta(days=1), lag=1)
    with CaptureQueriesContext(connection) as captured:
        api_client.get(URL, {"period": "7d"}, **headers)
    baseline = len(captured)  # token, membership, the one grouped statement (+ the RLS binding)

    for index in range(120):
        claimed_handoff(account, claimed_at=now - timedelta(hours=index * 17), lag=index)
    with django_assert_num_queries(baseline):
        body = api_client.get(URL, {"period": "90d"}, **headers).json()
    assert len(body["buckets"]) == 91


@pytest.mark.parametrize(("params", "allowed"), [({"interval": "month"}, "day, week"), ({"compare": "next"}, "previous")])
def test_a_wrong_choice_names_the_allowed_values(engineer_client, params, allowed):
    url = URL if "interval" in params else SUMMARY_URL
    [message] = engineer_client.get(url, params).json()[next(iter(params))]
    assert allowed in message


def test_each_row_carries_its_action_rate_and_with_a_target_its_share_within_it(engineer_client, account):
    for hour, lag in [(9, 10), (10, 30), (11, 400), (12, None)]:
        claimed_handoff(account, claimed_at=datetime(2026, 3, 1, hour, tzinfo=UTC), lag=lag)
    claimed_handoff(account, claimed_at=datetime(2026, 3, 2, 9, tzinfo=UTC), lag=301)

    first, second = get(engineer_client, start="2026-03-01", end="2026-03-03", target_seconds="300")["buckets"]

    assert (first["action_rate"], second["action_rate"]) == (0.75, 1.0)
    assert (first["target_seconds"], first["n_handoffs_within_target"], first["within_target_rate"]) == (
        300.0, 2, 0.6667
    )
    assert (second["n_handoffs_within_target"], second["within_target_rate"]) == (0, 0.0)
    summary = get(engineer_client, URL.removesuffix("/trend"), start="2026-03-01", end="2026-03-03",
                  target_seconds="300")
    assert summary["n_handoffs_within_target"] == first["n_handoffs_within_target"] + second[
        "n_handoffs_within_target"]


@pytest.mark.parametrize("params", [{"target_seconds": "-1"}, {"target_seconds": "nan"}, {"compare": "previous"}])
def test_a_bad_target_or_a_comparison_is_refused_not_ignored(engineer_client, params):
    response = engineer_client.get(URL, params)
    assert response.status_code == 400
    assert list(response.json()) == list(params)
