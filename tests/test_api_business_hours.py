"""clock=business on every analytics endpoint (CONTRACT.md, "Business hours") (core suite).

The contract's examples through the API, the clock's validation, query counts
that do not grow with the calendar, and, on both databases, the figures and the
drill-down's lags against the plain reference of tests/test_business_hours.py.
"""

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpilot_analytics.access import Role
from flowpilot_analytics.aggregation import Grouping, aggregate, aggregate_in_python
from flowpilot_analytics.business_hours import Schedule
from flowpilot_analytics.calendar_services import business_calendar_replace
from flowpilot_analytics.calendars import clock_choice
from flowpilot_analytics.figures import Context, summarize_lags
from flowpilot_analytics.selectors import handoff_rows, handoffs_in_window, handoffs_with_lag
from flowpilot_analytics.windows import Window, custom_window
from tests.builders import claimed_handoff, parse_csv
from tests.model_sets import MODELS
from tests.test_business_hours import CLAIMS, LAGS_US, schedules, reference_lag_us

pytestmark = [pytest.mark.django_db, pytest.mark.core]

BASE = "/api/v1/analytics/flowpilot/escalations"
PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc
NINE_TO_SIX = [(weekday, time(9), time(18)) for weekday in range(5)]
# The window around the contract's examples: Monday 30 November to Monday 14 December 2026.
WINDOW = {"start": "2026-11-30", "end": "2026-12-14", "time_zone": "Europe/Paris"}


def paris(*args):
    return datetime(*args, tzinfo=PARIS)


@pytest.fixture
def office(account):
    """09:00-18:00 Monday to Friday in Paris; Friday 17:55 acted on Monday 09:05; a weekend claim acted on in it."""
    business_calendar_replace(account=account, time_zone="Europe/Paris", intervals=NINE_TO_SIX)
    friday = claimed_handoff(account, claimed_at=paris(2026, 12, 4, 17, 55), lag=(63 * 60 + 10) * 60)
    weekend = claimed_handoff(account, claimed_at=paris(2026, 12, 5, 10), lag=29 * 3600)
    return account, friday, weekend


@pytest.fixture
def admin_api(api_client, member):
    api_client.force_authenticate(member(Role.ADMIN))
    return api_client


def get(client, url="", **params):
    response = client.get(BASE + url, {**WINDOW, **params})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_contract_examples_on_the_business_clock(engineer_client, office):
    calendar = get(engineer_client)
    business = get(engineer_client, clock="business")

    assert calendar["clock"] == "calendar" and business["clock"] == "business"
    assert calendar["max_seconds_to_first_action"] == 227_400.0  # 63 h 10 min
    # Friday 17:55 to Monday 09:05: 600 s; Saturday 10:00 to Sunday 15:00: 0 s.
    assert (business["n_handoffs_claimed"], business["n_handoffs_with_action"]) == (2, 2)
    assert business["max_seconds_to_first_action"] == 600.0
    assert business["avg_seconds_to_first_action"] == 300.0
    assert business["p95_seconds_to_first_action"] == 570.0


def test_the_default_clock_is_the_calendar_and_says_so(engineer_client, office):
    assert get(engineer_client)["clock"] == "calendar"
    assert get(engineer_client, clock="calendar") == get(engineer_client)


def test_target_distribution_and_compare_are_on_the_business_clock(engineer_client, office):
    body = get(engineer_client, clock="business", target_seconds=600, compare="previous")

    assert (body["n_handoffs_within_target"], body["within_target_rate"]) == (2, 1.0)
    counts = {bucket["bucket"]: bucket["count"] for bucket in body["distribution"]}
    assert (counts["under_1m"], counts["5m_to_15m"]) == (1, 1)
    assert body["previous"]["n_handoffs_claimed"] == 0
    assert body["change"]["n_handoffs_claimed"] == 2


def test_trend_per_engineer_and_drill_down_on_the_business_clock(admin_api, office):
    engineer_client = admin_api
    trend = get(engineer_client, "/trend", clock="business", interval="week")
    [week] = [bucket for bucket in trend["buckets"] if bucket["n_handoffs_claimed"]]
    assert (trend["clock"], week["avg_seconds_to_first_action"], week["p95_seconds_to_first_action"]) == (
        "business", 300.0, 570.0
    )

    engineers = get(engineer_client, "/by-engineer", clock="business")
    assert engineers["clock"] == "business"
    [deleted] = engineers["engineers"]  # claimed by nobody on record
    assert (deleted["engineer_id"], deleted["max_seconds_to_first_action"]) == (None, 600.0)

    rows = get(engineer_client, "/handoffs", clock="business", ordering="-seconds_to_first_action")
    assert rows["clock"] == "business"
    assert [row["seconds_to_first_action"] for row in rows["results"]] == [600.0, 0.0]


def test_the_csv_says_which_clock(admin_api, office):
    engineer_client = admin_api
    rows = parse_csv(engineer_client.get(BASE + "/handoffs", {**WINDOW, "clock": "business", "format": "csv"}))
    assert {row["clock"] for row in rows} == {"business"}
    assert sorted(float(row["seconds_to_first_action"]) for row in rows) == [0.0, 600.0]

    [summary] = parse_csv(engineer_client.get(BASE, {**WINDOW, "clock": "business", "format": "csv"}))
    assert (summary["clock"], summary["max_seconds_to_first_action"]) == ("business", "600.0")
    [summary] = parse_csv(engineer_client.get(BASE, {**WINDOW, "format": "csv"}))
    assert (summary["clock"], summary["max_seconds_to_first_action"]) == ("calendar", "227400.0")


def test_drill_down_pages_by_business_lag(admin_api, office, account):
    engineer_client = admin_api
    # A third handoff: Monday 10:00 acted on at 10:01 (60 s on both clocks).
    claimed_handoff(account, claimed_at=paris(2026, 12, 7, 10), lag=60)
    first = get(engineer_client, "/handoffs", clock="business", ordering="seconds_to_first_action", page_size=2)
    assert [row["seconds_to_first_action"] for row in first["results"]] == [0.0, 60.0]
    second = get(
        engineer_client,
        "/handoffs",
        clock="business",
        ordering="seconds_to_first_action",
        page_size=2,
        cursor=first["next_cursor"],
    )
    assert [row["seconds_to_first_action"] for row in second["results"]] == [600.0]
    # A cursor of the business clock means nothing on the calendar clock.
    refused = engineer_client.get(
        BASE + "/handoffs",
        {**WINDOW, "ordering": "seconds_to_first_action", "page_size": 2, "cursor": first["next_cursor"]},
    )
    assert refused.status_code == 400 and "cursor" in refused.json()


# --- Bad clocks ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "/trend", "/by-engineer", "/handoffs"])
@pytest.mark.parametrize("value", ["Business", "BUSINESS", "", "hours", "business "])
def test_a_clock_not_named_exactly_is_a_400_naming_clock(engineer_client, office, url, value):
    response = engineer_client.get(BASE + url, {**WINDOW, "clock": value})
    assert response.status_code == 400
    assert list(response.json()) == ["clock"]


def test_a_repeated_clock_is_a_400_naming_clock(engineer_client, office):
    response = engineer_client.get(BASE + "?clock=business&clock=business")
    assert response.status_code == 400
    assert list(response.json()) == ["clock"]


@pytest.mark.parametrize("url", ["", "/trend", "/by-engineer", "/handoffs"])
def test_business_without_a_calendar_is_a_400_naming_clock(engineer_client, account, url):
    claimed_handoff(account, claimed_at=paris(2026, 12, 4, 17, 55), lag=60)
    response = engineer_client.get(BASE + url, {**WINDOW, "clock": "business"})
    assert response.status_code == 400
    assert list(response.json()) == ["clock"]
    assert "calendar" in response.json()["clock"][0]
    assert get(engineer_client, url)["clock"] == "calendar"


def test_another_accounts_calendar_does_not_serve(engineer_client, account, other_account):
    business_calendar_replace(account=other_account, time_zone="UTC", intervals=NINE_TO_SIX)
    response = engineer_client.get(BASE, {**WINDOW, "clock": "business"})
    assert response.status_code == 400 and list(response.json()) == ["clock"]


# --- Query counts ------------------------------------------------------------------------------


def test_the_query_count_does_not_grow_with_the_calendar(api_client, member, account, django_assert_num_queries):
    api_client.force_authenticate(member(Role.ENGINEER))
    claimed_handoff(account, claimed_at=paris(2026, 12, 4, 17, 55), lag=600)
    business_calendar_replace(account=account, time_zone="Europe/Paris", intervals=NINE_TO_SIX[:1])

    def count(**params):
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            get(api_client, **params)
        return len(queries)

    calendar_clock = count()
    small = count(clock="business")
    # The calendar's three reads (calendar, intervals, closed dates), whatever their number.
    assert small == calendar_clock + 3
    business_calendar_replace(
        account=account,
        time_zone="Europe/Paris",
        intervals=[(weekday, time(hour), time(hour, 30)) for weekday in range(7) for hour in range(24)],
        closed_dates=[date(2026, 1, 1) + timedelta(days=n) for n in range(0, 365, 3)],
    )
    with django_assert_num_queries(small):
        get(api_client, clock="business")
    for url in ("/trend", "/by-engineer", "/handoffs"):
        with django_assert_num_queries(count(url=url) + 3):
            get(api_client, url, clock="business")


def test_business_figures_are_one_statement_on_postgresql(account, django_assert_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("the SQL path")
    business_calendar_replace(account=account, time_zone="Europe/Paris", intervals=NINE_TO_SIX)
    claimed_handoff(account, claimed_at=paris(2026, 12, 4, 17, 55), lag=(63 * 60 + 10) * 60)
    window = custom_window(date(2026, 11, 30), date(2026, 12, 14), time_zone="Europe/Paris")
    now = paris(2026, 12, 20)
    clock = clock_choice("business", [account]).for_window(window, now=now)
    with django_assert_num_queries(1):
        [figures] = aggregate(
            handoffs_in_window(account=account, window=window), context=Context(now=now, clock=clock)
        ).values()
    assert figures.max_seconds_to_first_action == 600.0


# --- Both databases against the reference --------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schedule=schedules(), claims=st.lists(st.tuples(CLAIMS, st.one_of(st.none(), LAGS_US)), min_size=1, max_size=8))
def test_figures_and_rows_agree_with_the_reference(db, schedule, claims):
    account = MODELS.account()
    business_calendar_replace(
        account=account,
        time_zone=schedule.time_zone,
        intervals=schedule.intervals,
        closed_dates=schedule.closed_dates,
    )
    for claimed_at, lag_us in claims:
        claimed_handoff(account, claimed_at=claimed_at, lag=None if lag_us is None else lag_us / 10**6)
    window = Window(start=datetime(2025, 12, 20, tzinfo=UTC), end=datetime(2027, 1, 1, tzinfo=UTC), closed=False)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    # Steps are stored to the microsecond: the reference reads the stored rows.
    stored = list(handoffs_in_window(account=account, window=window).values_list("claimed_at", "first_action_at"))
    reference = [reference_lag_us(schedule, claimed, action) for claimed, action in stored]
    waiting = [claimed for (claimed, action) in stored if action is None]
    expected = summarize_lags(
        len(stored),
        [lag for lag in reference if lag is not None],
        now=now,
        target_seconds=3600,
        oldest_waiting_claimed_at=min(waiting, default=None),
    )

    clock = clock_choice("business", [account]).for_window(window, now=now)
    context = Context(now=now, target_seconds=3600, clock=clock)
    handoffs = handoffs_in_window(account=account, window=window)
    [figures] = aggregate(handoffs, context=context).values()
    assert figures == expected
    [in_python] = aggregate_in_python(handoffs, context=context).values()
    assert in_python == expected

    # The drill-down's SQL lag (its ordering) and its rows' lags.
    lags = dict(handoffs_with_lag(account=account, window=window, clock=clock).values_list("id", "lag"))
    rows = {row["id"]: row for row in handoff_rows(handoffs_in_window(account=account, window=window), clock=clock)}
    for handoff_id, row in rows.items():
        lag = reference_lag_us(Schedule(schedule.time_zone, schedule.intervals, schedule.closed_dates),
                               row["claimed_at"], row["first_action_at"])
        assert lags[handoff_id] == lag
        assert row["seconds_to_first_action"] == (None if lag is None else round(lag / 10**6, 3))


# --- The dashboard and the report ------------------------------------------------------------


def test_the_dashboard_shows_the_business_clock(client, member, office):
    from tests.test_dashboard import PAGE, Page

    client.force_login(member(Role.ADMIN))
    response = client.get(PAGE, {**WINDOW, "clock": "business"})
    assert response.status_code == 200
    shown = Page(response.content.decode())
    assert shown.cards["p95_seconds_to_first_action"]["value"] == 570.0
    assert shown.cards["median_seconds_to_first_action"]["value"] == 300.0
    assert 'data-clock="business"' in response.content.decode()
    # Its CSV and API links keep the clock.
    assert all("clock=business" in link for link in shown.links if link and "/api/v1/" in link)
    calendar = Page(client.get(PAGE, WINDOW).content.decode())
    assert calendar.cards["p95_seconds_to_first_action"]["value"] == 221_250.0  # 104 400 s + 0.95 x (227 400 - 104 400)


def test_the_dashboard_refuses_business_without_a_calendar(client, member, account):
    from tests.test_dashboard import PAGE

    client.force_login(member(Role.ADMIN))
    response = client.get(PAGE, {**WINDOW, "clock": "business"})
    assert response.status_code == 400
    assert 'id="fp-clock-error"' in response.content.decode()
    assert "no business-hours calendar" in response.content.decode()
    bad = client.get(PAGE, {**WINDOW, "clock": "Business"})
    assert bad.status_code == 400 and 'id="fp-clock-error"' in bad.content.decode()


def report(*args):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("escalation_report", *args, stdout=out)
    return out.getvalue()


def business_office_now(account):
    """The contract's examples in the last week (the report's windows end now)."""
    import json

    from django.utils import timezone as django_timezone

    business_calendar_replace(account=account, time_zone="Europe/Paris", intervals=NINE_TO_SIX)
    today = django_timezone.now().astimezone(PARIS).date()
    # A Friday 7 to 13 days ago: the weekend's action is in the past whatever today is.
    friday = today - timedelta(days=(today.weekday() - 4) % 7 + 7)
    claimed_handoff(account, claimed_at=datetime.combine(friday, time(17, 55), tzinfo=PARIS), lag=(63 * 60 + 10) * 60)
    claimed_handoff(account, claimed_at=datetime.combine(friday + timedelta(days=1), time(10), tzinfo=PARIS), lag=29 * 3600)
    return json


def test_the_report_on_the_business_clock(account, other_account):
    json = business_office_now(account)
    label = MODELS.label(account)
    [row] = json.loads(report("--account", label, "--period", "30d", "--clock", "business", "--format", "json"))
    assert (row["clock"], row["n_handoffs_with_action"]) == ("business", 2)
    assert (row["avg_seconds_to_first_action"], row["p95_seconds_to_first_action"]) == (300.0, 570.0)
    [calendar] = json.loads(report("--account", label, "--period", "30d", "--format", "json"))
    assert (calendar["clock"], calendar["avg_seconds_to_first_action"]) == ("calendar", 165_900.0)
    assert "business clock" in report("--account", label, "--period", "30d", "--clock", "business")


def test_the_report_refuses_business_for_an_account_without_a_calendar(account, other_account):
    from django.core.management.base import CommandError

    business_office_now(account)
    with pytest.raises(CommandError, match="no business-hours calendar for"):
        report("--clock", "business")
    with pytest.raises(CommandError):
        report("--clock", "Business")


# --- Issue 14's faces on the business clock ---------------------------------------------------


def test_the_trend_rows_action_rate_and_target_share_follow_the_clock(engineer_client, office):
    # 600 s and 0 s on the business clock (63 h 10 min and 29 h on the calendar clock): a 400 s
    # target holds one of the two on the business clock, none on the calendar clock.
    query = {**WINDOW, "interval": "week", "target_seconds": "400"}
    business = engineer_client.get(BASE + "/trend", {**query, "clock": "business"})
    calendar = engineer_client.get(BASE + "/trend", query)
    assert business.status_code == calendar.status_code == 200, business.content
    assert business.json()["clock"] == "business"
    [week, _] = business.json()["buckets"]
    assert (week["n_handoffs_with_action"], week["action_rate"]) == (2, 1.0)
    assert (week["n_handoffs_within_target"], week["within_target_rate"]) == (1, 0.5)
    [calendar_week, _] = calendar.json()["buckets"]
    assert (calendar_week["n_handoffs_within_target"], calendar_week["within_target_rate"]) == (0, 0.0)


def test_the_report_takes_the_clock_with_the_apis_window_options(account, other_account):
    from django.core.management.base import CommandError

    json = business_office_now(account)
    label = MODELS.label(account)
    options = ("--account", label, "--period", "30d", "--target-seconds", "400", "--compare", "previous")
    [row] = json.loads(report(*options, "--clock", "business", "--format", "json"))
    assert (row["clock"], row["avg_seconds_to_first_action"]) == ("business", 300.0)
    assert (row["n_handoffs_within_target"], row["previous_n_handoffs_claimed"]) == (1, 0)
    [calendar] = json.loads(report(*options, "--format", "json"))
    assert (calendar["clock"], calendar["n_handoffs_within_target"]) == ("calendar", 0)
    table = report(*options, "--clock", "business")
    assert "target 6m 40s, compared with the window before" in table and "on the business clock" in table
    # The API's serializer validates the clock with the other options: one message names each option.
    with pytest.raises(CommandError, match=r"--end: .*"):
        report("--account", label, "--start", "2026-11-01", "--clock", "business")
