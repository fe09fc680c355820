"""The read router against a real hot standby: reads served by it, its figures, its failures.

``make standby-test`` (scripts/standby_test.py, run by CI) starts a small primary
cluster and a streaming standby of it (``pg_basebackup -R``), runs this module with
``DATABASE_URL`` on the primary and ``FLOWPILOT_ANALYTICS_DATABASE_URL`` on the
standby (the demo's ``analytics`` alias, ``DB_ALIAS = "analytics"``), and removes
both. Anywhere else the module is skipped. Rows are committed on the primary
(``transaction=True``) and reach the standby by WAL replay, as in production.
"""

import logging
import os
import shlex
import subprocess
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import close_old_connections, connection, connections, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from flowpilot_analytics import rls
from flowpilot_analytics.api import views
from flowpilot_analytics.db_roles import DEFAULT_APP_ROLE
from flowpilot_analytics.models import Membership
from flowpilot_analytics.selectors import escalation_metrics
from tests.builders import claimed_handoff, figures

STANDBY = "analytics"
URL = "/api/v1/analytics/flowpilot/escalations"

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(
        not os.environ.get("FLOWPILOT_STANDBY_TEST"),
        reason="needs a hot standby: `make standby-test` starts one (CI does)",
    ),
    pytest.mark.django_db(transaction=True, databases=["default", STANDBY]),
]


def on(alias, sql, params=()):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


@pytest.fixture
def standby(settings):
    """The standby, checked to be one; the router reads the activity tables from it."""
    assert settings.FLOWPILOT_ANALYTICS["DB_ALIAS"] == STANDBY
    in_recovery, port = on(STANDBY, "SELECT pg_is_in_recovery(), inet_server_port()")
    if not in_recovery:
        pytest.fail(f"FLOWPILOT_ANALYTICS_DATABASE_URL (port {port}) is not a hot standby")
    assert on("default", "SELECT pg_is_in_recovery()") == (False,)
    return port


def wait_for_replay(timeout=30):
    """Until the standby has replayed everything the primary has written so far; how long it took."""
    [lsn] = on("default", "SELECT pg_current_wal_lsn()::text")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if on(STANDBY, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]) == (True,):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"the standby did not replay {lsn} within {timeout} s")


@pytest.fixture
def engineer_of(api_client, member):
    def login(account):
        api_client.force_authenticate(member(Membership.Role.ENGINEER, account=account))
        return api_client

    return login


def build(account, now):
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=30)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=90.5)
    claimed_handoff(account, claimed_at=now - timedelta(days=3), lag=600)
    claimed_handoff(account, claimed_at=now - timedelta(days=4))


def figures_on_the_primary(account):
    with override_settings(FLOWPILOT_ANALYTICS={"DB_ALIAS": "default"}):
        return figures(escalation_metrics(account=account, period="7d"))


def test_the_analytics_reads_are_served_by_the_standby_with_the_primarys_figures(
    standby, account, engineer_of
):
    build(account, timezone.now())
    expected = figures_on_the_primary(account)
    assert expected[:2] == (4, 3)
    wait_for_replay()
    client = engineer_of(account)

    with CaptureQueriesContext(connection) as primary, CaptureQueriesContext(connections[STANDBY]) as replica:
        response = client.get(URL, {"period": "7d"})

    assert response.status_code == 200
    body = response.json()
    assert (body["n_handoffs_claimed"], body["n_handoffs_with_action"], body["avg_seconds_to_first_action"],
            body["median_seconds_to_first_action"], body["p95_seconds_to_first_action"]) == expected
    # The metric's statement ran on the standby's connection, which is in recovery.
    assert [query for query in replica.captured_queries if "session_handoff" in query["sql"]]
    assert not [query for query in primary.captured_queries if "session_handoff" in query["sql"]]
    assert on(STANDBY, "SELECT pg_is_in_recovery(), inet_server_port()") == (True, standby)


def test_the_signed_binding_is_checked_on_the_standby_as_the_app_role(standby, account, other_account):
    """The key table replicates and the policies' functions only read: the standby verifies bindings."""
    build(account, timezone.now())
    build(other_account, timezone.now())
    [expected] = on("default", "SELECT count(*) FROM session_handoff WHERE account_id = %s", [account.pk])
    wait_for_replay()
    with transaction.atomic(using=STANDBY):
        with connections[STANDBY].cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {DEFAULT_APP_ROLE}")
        rls.bind([STANDBY], {rls.ACCOUNT_SETTING: account.pk})  # signed with the standby backend's pid
        assert on(STANDBY, "SELECT flowpilot_analytics_bound_account(), count(*), count(DISTINCT account_id) "
                           "FROM session_handoff") == (account.pk, expected, 1)
        # Forged: the other account's id without the signature shows nothing.
        on(STANDBY, "SELECT set_config('flowpilot.account_id', %s, true)", [str(other_account.pk)])
        assert on(STANDBY, "SELECT flowpilot_analytics_bound_account(), count(*) FROM session_handoff") == (None, 0)
        transaction.set_rollback(True, using=STANDBY)


def test_a_recovery_conflict_is_a_503_with_retry_after_and_the_next_request_recovers(
    standby, account, engineer_of, monkeypatch
):
    """WAL replay of an ACCESS EXCLUSIVE lock cancels the standby's read (max_standby_streaming_delay)."""
    build(account, timezone.now())
    expected = figures_on_the_primary(account)
    wait_for_replay()
    [conflicts_before] = on(STANDBY, "SELECT confl_lock FROM pg_stat_database_conflicts "
                                     "WHERE datname = current_database()")
    real_metrics, calls = views.escalation_metrics, []

    def slow_metrics(**kwargs):
        """The metric, after holding the handoffs table on the standby for a few seconds."""
        calls.append(1)
        if len(calls) == 1:
            with connections[STANDBY].cursor() as cursor:
                cursor.execute("SELECT count(*) FROM session_handoff")
                cursor.execute("SELECT pg_sleep(4)")
        return real_metrics(**kwargs)

    def lock_on_the_primary():
        time.sleep(1)
        settings = connection.settings_dict
        with psycopg.connect(host=settings["HOST"], port=settings["PORT"], dbname=settings["NAME"],
                             user=settings["USER"], autocommit=True) as primary:
            with primary.transaction():
                primary.execute("LOCK TABLE session_handoff IN ACCESS EXCLUSIVE MODE")

    monkeypatch.setattr(views, "escalation_metrics", slow_metrics)
    client = engineer_of(account)
    locker = threading.Thread(target=lock_on_the_primary)
    locker.start()
    started = time.monotonic()
    response = client.get(URL, {"period": "7d"})
    elapsed = time.monotonic() - started
    locker.join(timeout=30)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "replication" in response.json()["detail"]
    assert elapsed < 4, "cancelled by the conflict, not left to finish its sleep"
    wait_for_replay()
    [conflicts_after] = on(STANDBY, "SELECT confl_lock FROM pg_stat_database_conflicts "
                                    "WHERE datname = current_database()")
    assert conflicts_after == conflicts_before + 1, "a real recovery conflict on the standby"

    again = client.get(URL, {"period": "7d"})
    assert again.status_code == 200
    assert again.json()["n_handoffs_claimed"] == expected[0]


def test_an_unreachable_standby_falls_back_to_the_primary_with_its_figures(
    standby, account, engineer_of, caplog
):
    """Runs last: it stops the standby (the command comes from scripts/standby_test.py)."""
    build(account, timezone.now())
    expected = figures_on_the_primary(account)
    wait_for_replay()
    client = engineer_of(account)
    assert client.get(URL, {"period": "7d"}).status_code == 200  # a kept-alive connection to it

    subprocess.run(shlex.split(os.environ["FLOWPILOT_STANDBY_STOP"]), check=True, capture_output=True)
    close_old_connections()  # what Django does as each request starts (health checks next)
    with CaptureQueriesContext(connection) as primary, caplog.at_level(logging.WARNING):
        response = client.get(URL, {"period": "7d"})

    assert response.status_code == 200
    assert response.json()["n_handoffs_claimed"] == expected[0]
    assert [query for query in primary.captured_queries if "session_handoff" in query["sql"]]
    assert f"Database {STANDBY!r} is unreachable, the analytics reads use the primary" in caplog.text
