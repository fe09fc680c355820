"""Many accounts at once (the admin widget's data): same figures as the API, bounded queries (core suite)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from flowpilot_analytics.access import Role
from flowpilot_analytics.api.serializers import EscalationMetricsOutputSerializer
from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.overview import daily_median_seconds_by_account, escalation_summary
from flowpilot_analytics.selectors import escalation_metrics, escalation_metrics_by_account
from flowpilot_analytics.windows import PERIODS
from tests.builders import claimed_handoff, step
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]

URL = "/api/v1/analytics/flowpilot/escalations"
DAY = timedelta(days=1)


def names(summary):
    return [row.name for row in summary.accounts]


def test_accounts_needing_attention_come_first_and_empty_ones_last(now):
    def account_with(slug, lags, days_ago=1):
        account = MODELS.account(slug=slug, name=slug)
        for index, lag in enumerate(lags):
            claimed_handoff(account, claimed_at=now - days_ago * DAY - timedelta(minutes=index), lag=lag)
        return account

    account_with("fast", [5, 6, 7])  # every claim acted on, quickly
    account_with("slow-tail", [5, 6, 900])  # every claim acted on, long p95
    account_with("gap", [5, None])  # half the claims without action: the worst
    account_with("never", [None])  # claimed, never acted on
    account_with("old-only", [5], days_ago=60)  # nothing in 30 days, something in 90
    account_with("aardvark-empty", [])

    summary = escalation_summary(now=now)

    assert names(summary) == ["never", "gap", "slow-tail", "fast", "aardvark-empty", "old-only"]
    by_name = {row.name: row for row in summary.accounts}
    assert by_name["old-only"].has_data and not by_name["aardvark-empty"].has_data
    assert [metrics.period for metrics in by_name["fast"].figures] == list(PERIODS)
    assert by_name["fast"].label == MODELS.label(by_name["fast"].account)


def test_limit_keeps_the_most_urgent_and_counts_the_rest(now):
    for index in range(4):
        account = MODELS.account(slug=f"acct-{index}", name=f"acct-{index}")
        claimed_handoff(account, claimed_at=now - DAY, lag=10 * (index + 1))
    claimed_handoff(MODELS.account(slug="acct-gap", name="acct-gap"), claimed_at=now - DAY)

    summary = escalation_summary(now=now, limit=2)

    assert names(summary) == ["acct-gap", "acct-3"]
    assert (summary.total_accounts, summary.hidden_accounts) == (5, 3)


def test_daily_medians_fall_in_24_hour_days_ending_now(account, other_account, now):
    claimed_handoff(account, claimed_at=now, lag=10)  # last 24 h
    claimed_handoff(account, claimed_at=now - timedelta(hours=23), lag=20)  # last 24 h
    claimed_handoff(account, claimed_at=now - DAY + timedelta(microseconds=1), lag=40)  # last 24 h
    claimed_handoff(account, claimed_at=now - DAY, lag=7)  # the newest instant of the day before
    claimed_handoff(account, claimed_at=now - 30 * DAY, lag=99)  # the window's first instant: oldest day
    claimed_handoff(account, claimed_at=now - 30 * DAY - timedelta(seconds=1), lag=1000)  # outside
    claimed_handoff(account, claimed_at=now - 5 * DAY)  # no action: no value for that day
    handoff = claimed_handoff(account, claimed_at=now - 3 * DAY)
    step(handoff.session, now - 3 * DAY)  # at the claim instant: not an action
    claimed_handoff(other_account, claimed_at=now - 2 * DAY, lag=5)

    series = daily_median_seconds_by_account(accounts=[account.pk, other_account.pk], days=30, now=now)

    ours = series[account.pk]
    assert len(ours) == 30
    assert ours[-1] == 20.0  # median of 10, 20 and 40
    assert ours[-2] == 7.0
    assert ours[0] == 99.0
    assert ours[-6] is None and ours[-4] is None
    assert sum(value is not None for value in ours) == 3
    assert series[other_account.pk][-3] == 5.0


def test_daily_medians_of_an_account_without_data_are_all_empty(account, now):
    assert daily_median_seconds_by_account(accounts=[account.pk], days=7, now=now) == {
        account.pk: (None,) * 7
    }
    assert daily_median_seconds_by_account(accounts=[], now=now) == {}
    with pytest.raises(ValueError):
        daily_median_seconds_by_account(accounts=[account.pk], days=0, now=now)


def test_constant_number_of_queries_whatever_the_number_of_accounts(now, django_assert_num_queries):
    def add_accounts(count):
        for _ in range(count):
            claimed_handoff(MODELS.account(), claimed_at=now - DAY, lag=3)

    add_accounts(2)
    # One lists the accounts, one per period (3), one for the daily series, one finds no calendar
    # (in a savepoint of its own: SAVEPOINT, RELEASE).
    with django_assert_num_queries(8):
        escalation_summary(now=now)
    add_accounts(10)
    with django_assert_num_queries(8):
        summary = escalation_summary(now=now)
    assert len(summary.accounts) == 12


def test_accounts_with_a_business_calendar_get_business_figures(now, django_assert_num_queries):
    from datetime import time

    from flowpilot_analytics.calendar_services import business_calendar_replace

    accounts = [MODELS.account() for _ in range(3)]
    for account in accounts:
        # Claimed Saturday-ish, a day before now: 3 s of calendar time.
        claimed_handoff(account, claimed_at=now - DAY, lag=3)
    business_calendar_replace(account=accounts[0], time_zone="UTC", intervals=[])  # never open
    business_calendar_replace(
        account=accounts[1], time_zone="UTC", intervals=[(weekday, time(0), time(0)) for weekday in range(7)]
    )
    # As above, and with calendars: their intervals, closed dates, and one statement per period for them.
    with django_assert_num_queries(8 + 2 + 3):
        summary = escalation_summary(now=now)
    rows = {row.account.pk: row for row in summary.accounts}
    never, always, without = (rows[account.pk] for account in accounts)
    assert [metrics.median_seconds_to_first_action for metrics in never.business_figures] == [0.0] * 3
    assert [metrics.median_seconds_to_first_action for metrics in always.business_figures] == [3.0] * 3
    assert {metrics.clock for metrics in always.business_figures} == {"business"}
    assert without.business_figures is None


# The single-account API path and the cross-account path, on random data.

# Seconds before "now" of each claim; kept 2 minutes away from the period edges
# so that the few milliseconds between the API's clock and ours cannot matter.
claim_offsets = st.integers(min_value=1, max_value=100 * 86_400).filter(
    lambda seconds: all(abs(seconds - days * 86_400) > 120 for days in (7, 30, 90))
)
handoffs = st.tuples(
    claim_offsets,
    st.one_of(st.none(), st.integers(min_value=1, max_value=3 * 86_400 * 1_000_000)),  # lag, microseconds
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(accounts=st.lists(st.lists(handoffs, max_size=12), min_size=1, max_size=3))
def test_api_and_cross_account_paths_agree_to_the_millisecond(accounts):
    now = timezone.now()
    created = []
    for account_handoffs in accounts:
        account = MODELS.account()
        for offset, lag in account_handoffs:
            claimed_handoff(
                account,
                claimed_at=now - timedelta(seconds=offset),
                lag=None if lag is None else lag / 1_000_000,
            )
        user = UserFactory()
        MODELS.grant(user, account, Role.ENGINEER)
        created.append((account, user))
    ids = [account.pk for account, _ in created]
    summary = {
        row.account.pk: row for row in escalation_summary(accounts=[a for a, _ in created], now=now).accounts
    }

    client = APIClient()
    for period in PERIODS:
        by_account = escalation_metrics_by_account(accounts=ids, period=period, now=now)
        for account, user in created:
            client.force_authenticate(user)
            from_api = client.get(URL, {"period": period}).json()
            expected = EscalationMetricsOutputSerializer(by_account[account.pk]).data
            # The API's own clock ran a moment later: only what depends on it may differ.
            for clocked in ("window_start", "window_end", "oldest_waiting_seconds"):
                from_api.pop(clocked), expected.pop(clocked)
            assert from_api == expected
            assert by_account[account.pk] == summary[account.pk].for_period(period)
            assert by_account[account.pk] == escalation_metrics(account=account, period=period, now=now)


def test_calendars_the_connection_may_not_read_leave_the_calendar_clock_only(now, monkeypatch, caplog):
    """A host's cross-account role granted its own tables but not the app's calendars (seen in CI's host smoke)."""
    from django.db import ProgrammingError

    from flowpilot_analytics import overview

    account = MODELS.account()
    claimed_handoff(account, claimed_at=now - DAY, lag=3)

    def refused(account_ids):
        raise ProgrammingError("permission denied for table flowpilot_analytics_businesscalendar")

    monkeypatch.setattr(overview, "business_schedules", refused)
    [row] = escalation_summary(now=now).accounts
    assert row.business_figures is None and row.for_period("7d").median_seconds_to_first_action == 3.0
    assert "cannot read the business-hours calendars" in caplog.text
