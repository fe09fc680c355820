"""Reads of the activity tables from a read replica: the router, the metric through it, the check."""

from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.db import connections, router
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flowpilot_analytics.models import Account, AiSession, AiSessionStep, Membership, SessionHandoff
from flowpilot_analytics.selectors import claimed_handoffs_with_first_action, escalation_metrics
from tests.builders import claimed_handoff

URL = "/api/v1/analytics/flowpilot/escalations"
ACTIVITY_MODELS = [AiSession, AiSessionStep, SessionHandoff]


@pytest.fixture
def replica(settings):
    settings.FLOWPILOT_ANALYTICS = {"DB_ALIAS": "replica"}
    return "replica"


def test_without_the_setting_every_read_uses_default():
    for model in [*ACTIVITY_MODELS, Account, Membership]:
        assert router.db_for_read(model) == "default"


@pytest.mark.parametrize("model", ACTIVITY_MODELS)
def test_activity_tables_are_read_from_the_replica_and_written_to_default(replica, model):
    assert router.db_for_read(model) == replica
    assert router.db_for_write(model) == "default"


@pytest.mark.parametrize("model", [Account, Membership])
def test_tenancy_tables_stay_on_the_primary(replica, model):
    assert router.db_for_read(model) == "default"


def test_the_metric_queryset_reads_from_the_replica(replica, now):
    queryset = claimed_handoffs_with_first_action(accounts=[1], start=now - timedelta(days=7), end=now)
    assert queryset.db == replica


def test_the_replica_is_never_migrated(replica):
    assert router.allow_migrate(replica, "flowpilot_analytics") is False
    assert router.allow_migrate("default", "flowpilot_analytics") is True


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_metric_is_computed_on_the_replica_with_the_same_figures(settings, account, now):
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=30)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=90)
    claimed_handoff(account, claimed_at=now - timedelta(hours=3))
    on_primary = escalation_metrics(account=account, period="7d", now=now)

    settings.FLOWPILOT_ANALYTICS = {"DB_ALIAS": "replica"}
    with CaptureQueriesContext(connections["default"]) as primary, CaptureQueriesContext(
        connections["replica"]
    ) as replica:
        on_replica = escalation_metrics(account=account, period="7d", now=now)

    assert on_replica == on_primary
    assert (on_replica.n_handoffs_claimed, on_replica.n_handoffs_with_action) == (3, 2)
    # The replica serves the one statement of the metric (inside the request's
    # own transaction there: its BEGIN/ROLLBACK and, on PostgreSQL, the RLS binding).
    reads = [query["sql"] for query in replica.captured_queries if "session_handoff" in query["sql"]]
    assert len(reads) == 1
    assert len(primary.captured_queries) == 0


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_api_authorises_on_the_primary_and_reads_figures_from_the_replica(settings, engineer_client, account):
    claimed_handoff(account, claimed_at=timezone.now() - timedelta(days=1), lag=12)
    settings.FLOWPILOT_ANALYTICS = {"DB_ALIAS": "replica"}

    with CaptureQueriesContext(connections["default"]) as primary, CaptureQueriesContext(
        connections["replica"]
    ) as replica:
        response = engineer_client.get(URL, {"period": "7d"})

    assert response.status_code == 200
    assert response.json()["avg_seconds_to_first_action"] == 12.0
    # The replica serves the one statement of the metric (inside the request's
    # own transaction there: its BEGIN/ROLLBACK and, on PostgreSQL, the RLS binding).
    reads = [query["sql"] for query in replica.captured_queries if "session_handoff" in query["sql"]]
    assert len(reads) == 1
    primary_reads = [
        query["sql"] for query in primary.captured_queries if query["sql"].startswith('SELECT "')
    ]
    # Who may read what (the memberships), and the account, on fresh data.
    assert primary_reads
    assert all("flowpilot_analytics_membership" in sql or 'FROM "flowpilot_analytics_account"' in sql
               for sql in primary_reads)


def check_ids():
    return {message.id for message in run_checks(include_deployment_checks=False)}


def test_check_refuses_an_alias_missing_from_databases(settings):
    settings.FLOWPILOT_ANALYTICS = {"DB_ALIAS": "no-such-replica"}
    assert "flowpilot_analytics.E101" in check_ids()


def test_check_warns_when_the_router_is_not_installed(settings):
    settings.FLOWPILOT_ANALYTICS = {"DB_ALIAS": "replica"}
    settings.DATABASE_ROUTERS = []
    assert "flowpilot_analytics.W101" in check_ids()


def test_check_is_silent_when_configured(replica):
    assert not {id for id in check_ids() if id.startswith("flowpilot_analytics.")}
