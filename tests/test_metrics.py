"""The metric selector: docs/metric.md, "Definition", case by case; the SQL and Python paths agree.

The core suite: it runs with the app's models and with a host's (tests/model_sets.py).
"""

import random
from datetime import timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowpilot_analytics.aggregation import Grouping, aggregate, aggregate_in_python
from flowpilot_analytics.clocks import CALENDAR
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.figures import Context, summarize_lags
from flowpilot_analytics.selectors import (
    claimed_handoffs_with_first_action,
    empty_figures,
    escalation_metrics,
    escalation_metrics_by_account,
    handoffs_in_window,
)
from flowpilot_analytics.sql import aggregate_in_sql
from flowpilot_analytics.windows import bucket_edges, custom_window
from tests.builders import claimed_handoff, figures, step, unclaimed_handoff
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]


def test_happy_path_with_hand_computed_figures(account, now):
    for hours_ago, lag in [(1, 30), (5, 60), (30, 120.5)]:
        claimed_handoff(account, claimed_at=now - timedelta(hours=hours_ago), lag=lag)

    metrics = escalation_metrics(account=account, period="7d", now=now)

    # mean (30 + 60 + 120.5) / 3; p95 at rank 1.9: 60 + 0.9 * 60.5
    assert figures(metrics) == (3, 3, 70.167, 60.0, 114.45)
    assert metrics.period == "7d"
    assert metrics.metric_definition == METRIC_DEFINITION


def test_no_data_gives_zero_counts_and_null_statistics(account, now):
    assert figures(escalation_metrics(account=account, period="30d", now=now)) == (0, 0, None, None, None)


def test_claimed_without_action_counts_as_claimed_only(account, now):
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=42)
    claimed_handoff(account, claimed_at=now - timedelta(hours=3))

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (2, 1, 42.0, 42.0, 42.0)


def test_window_is_closed_at_both_edges_of_seven_days(account, now):
    claimed_handoff(account, claimed_at=now - timedelta(days=7), lag=10)  # first instant inside
    claimed_handoff(account, claimed_at=now, lag=20)  # last instant inside
    claimed_handoff(account, claimed_at=now - timedelta(days=7, microseconds=1), lag=1000)
    claimed_handoff(account, claimed_at=now + timedelta(microseconds=1), lag=1000)

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (2, 2, 15.0, 15.0, 19.5)
    assert escalation_metrics(account=account, period="30d", now=now).n_handoffs_claimed == 3


def test_unclaimed_handoffs_are_ignored(account, now):
    session = MODELS.session(account, created_at=now - timedelta(hours=1))
    unclaimed_handoff(session, created_at=now - timedelta(minutes=30))
    step(session, now - timedelta(minutes=10))

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (0, 0, None, None, None)


def test_steps_at_or_before_the_claim_are_not_actions(account, now):
    claimed_at = now - timedelta(hours=1)
    handoff = claimed_handoff(account, claimed_at=claimed_at)
    step(handoff.session, claimed_at - timedelta(seconds=30))
    step(handoff.session, claimed_at)

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (1, 0, None, None, None)

    step(handoff.session, claimed_at + timedelta(microseconds=1500))
    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (1, 1, 0.002, 0.002, 0.002)


def test_first_action_is_the_earliest_later_step(account, now):
    claimed_at = now - timedelta(hours=1)
    handoff = claimed_handoff(account, claimed_at=claimed_at, lag=300)
    step(handoff.session, claimed_at + timedelta(seconds=45))
    step(handoff.session, claimed_at + timedelta(seconds=90))

    handoff_row = claimed_handoffs_with_first_action(
        accounts=[account], start=now - timedelta(days=1), end=now
    ).get()
    assert handoff_row.first_action_at == claimed_at + timedelta(seconds=45)


def test_handoffs_of_one_session_are_measured_independently(account, now):
    first_claim = now - timedelta(hours=2)
    session = MODELS.session(account, created_at=first_claim - timedelta(minutes=5))
    claimed_handoff(account, claimed_at=first_claim, session=session)
    claimed_handoff(account, claimed_at=first_claim + timedelta(seconds=100), session=session)
    step(session, first_claim + timedelta(seconds=130))

    # One step serves both: 130 s after the first claim, 30 s after the second.
    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (2, 2, 80.0, 80.0, 125.0)


def test_known_median_and_p95_over_many_handoffs(account, now):
    for seconds in range(1, 21):
        claimed_handoff(account, claimed_at=now - timedelta(hours=seconds), lag=seconds)

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (20, 20, 10.5, 10.5, 19.05)


def test_millisecond_precision_survives(account, now):
    claimed_handoff(account, claimed_at=now - timedelta(minutes=3), lag=0.0004)
    claimed_handoff(account, claimed_at=now - timedelta(minutes=2), lag=86_400 * 3 + 0.0124)

    metrics = escalation_metrics(account=account, period="7d", now=now)
    assert metrics.avg_seconds_to_first_action == 129_600.006
    assert metrics.median_seconds_to_first_action == 129_600.006
    assert metrics.p95_seconds_to_first_action == 246_240.012


def test_other_accounts_never_change_the_figures(account, other_account, now):
    """Interleaved ids, a foreign step inside our session, foreign handoffs in the window."""
    rng = random.Random(7)
    for index in range(20):
        claimed_at = now - timedelta(hours=index + 1)
        claimed_handoff(other_account, claimed_at=claimed_at, lag=rng.uniform(1, 5000))
        if index % 2 == 0:
            claimed_handoff(account, claimed_at=claimed_at, lag=index + 1)
    ours_alone = figures(escalation_metrics(account=account, period="7d", now=now))

    victim = claimed_handoff(account, claimed_at=now - timedelta(minutes=5))
    if MODELS.steps_have_account:
        # A mis-attributed step of the other tenant, inside our session, right after the claim.
        MODELS.step(victim.session, now - timedelta(minutes=4), account=other_account)

    assert ours_alone == (10, 10, 10.0, 10.0, 18.1)
    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (11, 10, 10.0, 10.0, 18.1)


@pytest.mark.skipif(not MODELS.steps_have_account, reason="the steps of these models have no account")
def test_without_an_account_on_the_step_the_session_alone_scopes_the_probe(account, other_account, now, settings):
    """FIELDS["step.account"] = None: a step counts for the handoffs of its session, whatever its account."""
    victim = claimed_handoff(account, claimed_at=now - timedelta(minutes=5), lag=120)
    MODELS.step(victim.session, now - timedelta(minutes=4), account=other_account)
    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (1, 1, 120.0, 120.0, 120.0)

    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "FIELDS": {"step.account": None}}

    assert figures(escalation_metrics(account=account, period="7d", now=now)) == (1, 1, 60.0, 60.0, 60.0)


def test_by_account_lists_every_account_and_matches_the_single_account_path(account, other_account, now):
    empty = MODELS.account(slug="empty")
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=12)
    claimed_handoff(other_account, claimed_at=now - timedelta(hours=1), lag=99)

    by_account = escalation_metrics_by_account(period="30d", now=now)

    assert set(by_account) == {account.pk, other_account.pk, empty.pk}
    for each in (account, other_account, empty):
        assert by_account[each.pk] == escalation_metrics(account=each, period="30d", now=now)
    assert figures(by_account[empty.pk]) == (0, 0, None, None, None)


def test_one_query_whatever_the_number_of_handoffs(account, now, django_assert_num_queries):
    for index in range(30):
        claimed_handoff(account, claimed_at=now - timedelta(hours=index), lag=index)
    with django_assert_num_queries(1):
        escalation_metrics(account=account, period="7d", now=now)


class TwiceTheCalendar:
    """A stand-in for another clock (business hours will be one): every lag doubled."""

    name = "twice"

    def periods_sql(self, account_ref=None):
        return "", []

    def lag_sql(self):
        sql, params = CALENDAR.lag_sql()
        return f"2 * {sql}", params

    def lag_us(self, claimed_at, first_action_at, account_id=None):
        lag = CALENDAR.lag_us(claimed_at, first_action_at)
        return None if lag is None else 2 * lag


def test_another_clock_changes_the_lags_and_nothing_else(account, now):
    for hours_ago, lag in [(1, 30), (5, 60), (30, 120.5)]:
        claimed_handoff(account, claimed_at=now - timedelta(hours=hours_ago), lag=lag)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2))
    handoffs = handoffs_in_window(account=account, window=custom_window(now - timedelta(days=7), now))

    [calendar] = aggregate(handoffs, context=Context(now=now, target_seconds=100)).values()
    [twice] = aggregate(handoffs, context=Context(now=now, target_seconds=100, clock=TwiceTheCalendar())).values()

    assert figures(calendar) == (4, 3, 70.167, 60.0, 114.45)
    assert figures(twice) == (4, 3, 140.333, 120.0, 228.9)
    assert (calendar.n_handoffs_within_target, twice.n_handoffs_within_target) == (2, 1)
    assert twice.oldest_waiting_seconds == calendar.oldest_waiting_seconds == 7200.0
    if connection.vendor == "postgresql":
        context = Context(now=now, target_seconds=100, clock=TwiceTheCalendar())
        in_python = aggregate_in_python(handoffs, context=context)
        assert aggregate_in_sql(handoffs, grouping=Grouping(), context=context) == in_python


# Lags in microseconds: None is a claimed handoff without action. Drawing from a
# small pool as well as a wide range makes ties frequent; empty lists and lists
# of None only are the empty sets.
LAGS = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from([1, 999, 1_000_000, 60_000_000]),
        st.integers(min_value=1, max_value=3 * 86_400 * 1_000_000),
    ),
    max_size=20,
)
ACCOUNTS_LAGS = st.lists(LAGS, min_size=1, max_size=3)
EMPTY_SETS = [[]], [[None, None]], [[], [None]]
TIES = [[5_000_000] * 4], [[1, 1, None, 1_000_000, 1_000_000]], [[7, 7], [7]]


def build_lags(accounts_lags, now):
    """One account per list, a claimed handoff per lag (its step ``lag`` microseconds later)."""
    accounts = []
    for lags in accounts_lags:
        account = MODELS.account()
        for index, lag in enumerate(lags):
            handoff = claimed_handoff(account, claimed_at=now - timedelta(minutes=index + 1))
            if lag is not None:
                step(handoff.session, handoff.claimed_at + timedelta(microseconds=lag))
        accounts.append(account)
    return accounts


def reference_summary(lags, now):
    """The pure-Python reference: the contract applied straight to the generated lags (see build_lags)."""
    waiting = [index for index, lag in enumerate(lags) if lag is None]
    return summarize_lags(
        len(lags),
        [lag for lag in lags if lag is not None],
        now=now,
        oldest_waiting_claimed_at=now - timedelta(minutes=max(waiting) + 1) if waiting else None,
    )


def each_example(examples):
    def decorate(test):
        for accounts_lags in examples:
            test = example(accounts_lags=accounts_lags)(test)
        return test

    return decorate


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(accounts_lags=ACCOUNTS_LAGS)
@each_example(EMPTY_SETS + TIES)
def test_python_aggregation_equals_the_reference(now, accounts_lags):
    accounts = build_lags(accounts_lags, now)
    start, end = now - timedelta(days=7), now

    in_python = aggregate_in_python(
        claimed_handoffs_with_first_action(accounts=accounts, start=start, end=end),
        grouping=Grouping(accounts=tuple(account.pk for account in accounts)),
        context=Context(now=now),
    )

    for account, lags in zip(accounts, accounts_lags):
        assert in_python.get(account.pk, empty_figures(now=now)) == reference_summary(lags, now)


@pytest.mark.postgres_only
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(accounts_lags=ACCOUNTS_LAGS)
@each_example(EMPTY_SETS + TIES)
def test_sql_aggregation_equals_python_aggregation_and_the_reference(now, accounts_lags):
    """The PostgreSQL path, the Python path and the reference agree exactly, ties and empty sets included."""
    assert connection.vendor == "postgresql"
    accounts = build_lags(accounts_lags, now)
    start, end = now - timedelta(days=7), now
    account_ids = [account.pk for account in accounts]
    handoffs = claimed_handoffs_with_first_action(accounts=account_ids, start=start, end=end)
    by_account = {"grouping": Grouping(accounts=tuple(account_ids)), "context": Context(now=now)}

    in_sql = aggregate_in_sql(handoffs, **by_account)
    in_python = aggregate_in_python(handoffs, **by_account)

    # The SQL path answers a row for every account asked, even one without handoffs.
    assert set(in_sql) == set(account_ids)
    for account, lags in zip(accounts, accounts_lags):
        assert in_sql[account.pk] == in_python.get(account.pk, empty_figures(now=now))
        assert in_sql[account.pk] == reference_summary(lags, now)


@pytest.mark.postgres_only
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lags=st.lists(st.one_of(st.none(), st.integers(min_value=1, max_value=10**11)), max_size=25),
    target=st.one_of(st.none(), st.integers(min_value=0, max_value=10**11)),
)
def test_grouped_sql_equals_grouped_python_by_bucket_and_by_claimer(now, lags, target):
    """Trend buckets, per-claimer groups, days per account: the same figures from SQL and from Python."""
    assert connection.vendor == "postgresql"
    account = MODELS.account()
    claimers = [None, UserFactory(), UserFactory()]
    for index, lag in enumerate(lags):
        handoff = claimed_handoff(
            account, claimed_at=now - timedelta(hours=index * 7 + 1), claimed_by=claimers[index % 3]
        )
        if lag is not None:
            step(handoff.session, handoff.claimed_at + timedelta(microseconds=lag))
    window = custom_window(now - timedelta(days=9), now)
    handoffs = handoffs_in_window(account=account, window=window)
    context = Context(now=now, target_seconds=None if target is None else target / 1_000_000)
    days = tuple(bucket_edges(window, "day"))

    for grouping in (
        Grouping(bucket_edges=days),
        Grouping(field="claimed_by_id"),
        Grouping(),
        Grouping(accounts=(account.pk,), bucket_edges=days),
    ):
        in_sql = aggregate_in_sql(handoffs, grouping=grouping, context=context)
        in_python = aggregate_in_python(handoffs, grouping=grouping, context=context)
        assert in_sql == in_python
        assert sum(summary.n_handoffs_claimed for summary in in_sql.values()) == len(lags)
