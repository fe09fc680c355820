"""The metric's statement on PostgreSQL, read through EXPLAIN: the indexes are the ones the probe needs."""

from datetime import timedelta

import pytest
from django.db import connection

from flowpilot_analytics.aggregation import Grouping
from flowpilot_analytics.factories import AccountFactory
from flowpilot_analytics.figures import Context
from flowpilot_analytics.models import AiSession, AiSessionStep, SessionHandoff
from flowpilot_analytics.selectors import claimed_handoffs
from flowpilot_analytics.sql import statement
from flowpilot_analytics.windows import Window

# Committed and vacuumed like production tables (autovacuum sets the visibility
# map that index-only scans rely on), hence a transactional test.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]

SESSIONS_PER_ACCOUNT = 300
STEPS_PER_SESSION = 10


@pytest.fixture
def history(now):
    """Three accounts with enough sessions and steps that the planner weighs its options."""
    accounts = [AccountFactory() for _ in range(3)]
    sessions = AiSession.objects.bulk_create(
        AiSession(account=account, created_at=now - timedelta(hours=index + 1))
        for account in accounts
        for index in range(SESSIONS_PER_ACCOUNT)
    )
    steps, handoffs = [], []
    for index, session in enumerate(sessions):
        opened, account_id = session.created_at, session.account_id
        steps += [
            AiSessionStep(
                session=session, account_id=account_id, created_at=opened + timedelta(minutes=minute)
            )
            for minute in range(STEPS_PER_SESSION)
        ]
        # One handoff in ten is never claimed.
        claimed_at = opened + timedelta(minutes=3, seconds=30) if index % 10 else None
        handoffs.append(
            SessionHandoff(
                session=session,
                account_id=account_id,
                created_at=opened + timedelta(minutes=2),
                claimed_at=claimed_at,
            )
        )
    AiSessionStep.objects.bulk_create(steps)
    SessionHandoff.objects.bulk_create(handoffs)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE ai_session, ai_session_step, session_handoff")
    return accounts


def plan_nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def explain(accounts, now):
    sql, params = statement(
        claimed_handoffs(window=Window(start=now - timedelta(days=90), end=now, closed=True)),
        grouping=Grouping(accounts=tuple(account.pk for account in accounts)),
        context=Context(now=now),
        connection=connection,
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        (document,) = cursor.fetchone()
    return list(plan_nodes(document[0]["Plan"]))


def scans_of(nodes, table):
    return [node for node in nodes if node.get("Relation Name") == table]


@pytest.mark.parametrize("n_accounts", [1, 3])
def test_first_action_probe_is_one_index_scan_and_the_step_table_is_never_scanned_whole(
    history, now, n_accounts
):
    nodes = explain(history[:n_accounts], now)

    # One scan node: the probe runs once per handoff, not once per aggregate using the lag.
    (probe,) = scans_of(nodes, "ai_session_step")
    assert probe["Node Type"] == "Index Only Scan"
    assert probe["Index Name"] == "step_account_session_created"
    for column in ("account_id", "session_id", "created_at"):
        assert column in probe["Index Cond"]


@pytest.mark.parametrize("n_accounts", [1, 3])
def test_the_business_clock_runs_the_probe_once_per_handoff_too(history, now, n_accounts):
    from datetime import time

    from flowpilot_analytics.calendar_services import business_calendar_replace
    from flowpilot_analytics.calendars import clock_choice

    accounts = history[:n_accounts]
    for account in accounts:
        business_calendar_replace(
            account=account, time_zone="Europe/Paris", intervals=[(day, time(9), time(18)) for day in range(5)]
        )
    window = Window(start=now - timedelta(days=90), end=now, closed=True)
    clock = clock_choice("business", accounts).for_window(window, now=now)
    sql, params = statement(
        claimed_handoffs(window=window),
        grouping=Grouping(accounts=tuple(account.pk for account in accounts)),
        context=Context(now=now, clock=clock),
        connection=connection,
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        (document,) = cursor.fetchone()
    # The lag reads first_action_at five times: fenced, the probe still runs once per handoff.
    (probe,) = scans_of(list(plan_nodes(document[0]["Plan"])), "ai_session_step")
    assert probe["Index Name"] == "step_account_session_created"
