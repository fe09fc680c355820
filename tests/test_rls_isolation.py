"""Tenant isolation under Row-Level Security, whichever models and policies: the core suite, PostgreSQL.

Run with the app's models (its policies, migrations 0002/0005/0006) and with a
host's (tests/host_app: its own FORCE'd policies, keyed on its own settings,
which the app sets through FLOWPILOT_ANALYTICS["RLS"]). Every test runs as the
role the app serves as (not owner, not superuser, no BYPASSRLS): a superuser
would bypass the policies and prove nothing. The data is built first, as the
test's superuser; then the transaction switches role. Where a test shows that
RLS hides a row, it first shows the row is really there. The app's own policies
in detail: tests/test_rls.py.
"""

import json
import threading
import wsgiref.util
from datetime import timedelta
from io import BytesIO

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import ProgrammingError, connection, connections, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics import rls
from flowpilot_analytics.access import Role
from flowpilot_analytics.api import views
from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.field_map import metric_tables
from flowpilot_analytics.selectors import escalation_metrics, escalation_metrics_by_account
from tests.builders import (
    account_ids_visible,
    claimed_handoff,
    figures,
    nothing_visible,
    only_visible,
    set_config,
)
from tests.model_sets import MODELS

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db, pytest.mark.core]

URL = "/api/v1/analytics/flowpilot/escalations"


def test_without_a_setting_the_app_role_sees_no_rows_and_no_error(two_tenants, become_app_role):
    account, other_account = two_tenants
    assert account_ids_visible() == only_visible(account, other_account)

    become_app_role()

    assert account_ids_visible() == nothing_visible()
    assert figures(escalation_metrics(account=account, period="7d")) == (0, 0, None, None, None)


def test_an_empty_setting_matches_nothing(two_tenants, become_app_role):
    """'' is what a pooled connection holds once a transaction that set the account has ended."""
    become_app_role()
    rls.set_local(["default"], {MODELS.account_setting: "", MODELS.user_setting: "", MODELS.cross_account_setting: ""})

    assert account_ids_visible() == nothing_visible()


def test_queries_without_their_account_filter_see_only_the_bound_account(two_tenants, become_app_role):
    account, other_account = two_tenants
    expected = figures(escalation_metrics(account=account, period="7d"))
    assert expected == (2, 2, 15.0, 15.0, 19.5)
    assert escalation_metrics(account=other_account, period="7d").n_handoffs_claimed == 3

    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        visible = account_ids_visible()
        # The metric's own statement, asked for both accounts: its account
        # filter no longer restricts anything, RLS still does.
        both = escalation_metrics_by_account(accounts=[account, other_account], period="7d")
        every = escalation_metrics_by_account(period="7d")

    # The bound account's members too (an admin names them), never another account's.
    assert visible == only_visible(account)
    assert figures(both[account.pk]) == figures(every[account.pk]) == expected
    assert figures(both[other_account.pk]) == (0, 0, None, None, None)
    # Every account: the app's account table has no policy (names, no figures), a host's may hide
    # the other organisations too.
    assert other_account.pk not in every or figures(every[other_account.pk]) == (0, 0, None, None, None)


def test_the_endpoint_with_a_wrong_account_bug_returns_nothing_of_the_other_tenant(
    two_tenants, api_client, become_app_role, monkeypatch
):
    account, other_account = two_tenants
    [engineer] = MODELS.members(account)
    api_client.force_authenticate(engineer)

    def buggy_metrics(*, account, **window):
        """A regression: the view computes the figures of an account taken from the wrong place."""
        return escalation_metrics(account=other_account, **window)

    monkeypatch.setattr(views, "escalation_metrics", buggy_metrics)
    # As a superuser the bug leaks B's three handoffs: the test can see a leak.
    assert api_client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 3

    become_app_role()
    body = api_client.get(URL, {"period": "7d"}).json()
    assert body["n_handoffs_claimed"] == 0
    assert body["avg_seconds_to_first_action"] is None

    monkeypatch.undo()
    assert api_client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 2


@pytest.mark.skipif(not MODELS.steps_have_account, reason="these steps have no account: their session's is theirs")
def test_a_poisoned_step_of_another_account_does_not_change_the_figures(
    account, other_account, become_app_role, now
):
    victim = claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=60)
    # Account B's step pointing at A's session, one second after A's claim.
    poison = MODELS.step(victim.session, victim.claimed_at + timedelta(seconds=1), account=other_account)
    first_step = type(poison).objects.filter(session=victim.session, created_at__gt=victim.claimed_at)
    assert first_step.order_by("created_at").first() == poison  # it is there, and first

    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        unfiltered_first = first_step.order_by("created_at").first()
        metrics = escalation_metrics(account=account, period="7d", now=now)
    with rls.tenant_transaction():
        rls.bind_account(other_account)
        seen_by_b = escalation_metrics_by_account(accounts=[account, other_account], period="7d", now=now)

    assert unfiltered_first != poison and unfiltered_first.account_id == account.pk
    assert figures(metrics) == (1, 1, 60.0, 60.0, 60.0)
    assert seen_by_b[account.pk].n_handoffs_claimed == seen_by_b[other_account.pk].n_handoffs_claimed == 0


def test_writes_outside_the_bound_account_are_refused(two_tenants, become_app_role, now):
    account, other_account = two_tenants
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        MODELS.session(account, created_at=now)  # its own account: allowed
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            MODELS.session(other_account, created_at=now)


def test_the_api_ignores_a_cross_account_setting_left_on_the_connection(
    two_tenants, api_client, become_app_role
):
    """Even a connection where something switched the setting on serves the API only the caller's account."""
    account, other_account = two_tenants
    [engineer] = MODELS.members(account)
    api_client.force_authenticate(engineer)
    become_app_role()
    set_config({MODELS.cross_account_setting: "on"})
    if MODELS.name == "app":
        assert account_ids_visible()["session"] == set()  # the app's own setting is the owner's only
    else:
        assert account_ids_visible()["session"] == {account.pk, other_account.pk}  # this host's is anyone's

    assert api_client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 2


# --- The setting never outlives its request, on a reused connection --------------------


def call_api(application, token, query):
    environ = {"PATH_INFO": URL, "QUERY_STRING": query, "REQUEST_METHOD": "GET",
               "HTTP_AUTHORIZATION": f"Token {token}", "HTTP_ACCEPT": "application/json",
               "wsgi.input": BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    status = []
    chunks = application(environ, lambda code, headers, exc_info=None: status.append(code))
    try:
        return int(status[0].split()[0]), json.loads(b"".join(chunks))
    finally:
        chunks.close()  # sends request_finished, as a WSGI server does


@pytest.mark.django_db(transaction=True)
def test_settings_do_not_survive_the_request_on_reused_connections_across_threads(
    app_role, monkeypatch
):
    """Two threads, each on its own kept-alive connection, alternate between two accounts."""
    now = timezone.now()
    accounts = [MODELS.account(slug="rls-a"), MODELS.account(slug="rls-b")]
    for index, account in enumerate(accounts):
        for hours in range(1, index + 3):  # A: 2 handoffs, B: 3
            claimed_handoff(account, claimed_at=now - timedelta(hours=hours), lag=10 * (index + 1))
    # One user, engineer of both: only the account parameter differs between requests.
    user = UserFactory()
    for account in accounts:
        MODELS.grant(user, account, Role.ENGINEER)
    token = Token.objects.create(user=user).key
    expected = {accounts[0].pk: (2, 10.0), accounts[1].pk: (3, 20.0)}

    # Django keeps a connection across requests when CONN_MAX_AGE > 0.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    application = WSGIHandler()
    rounds = 6
    barrier = threading.Barrier(2)
    observations = {0: [], 1: []}
    errors = []

    def worker(index):
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SET ROLE {app_role}")  # for the life of this connection
                cursor.execute("SELECT pg_backend_pid(), current_setting('statement_timeout')")
                pid, default_timeout = cursor.fetchone()
            for turn in range(rounds):
                barrier.wait(timeout=30)
                account = accounts[(index + turn) % 2]
                status, body = call_api(application, token, f"account={account.pk}&period=7d")
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_backend_pid(), current_user, current_setting(%s, true), "
                        "current_setting(%s, true), current_setting('statement_timeout'), "
                        f"(SELECT count(*) FROM {metric_tables().session.name})",
                        [MODELS.account_setting, MODELS.user_setting],
                    )
                    after = cursor.fetchone()
                observations[index].append(
                    (account.pk, status, (body.get("n_handoffs_claimed"), body.get("avg_seconds_to_first_action")),
                     after, pid, default_timeout)
                )
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    for index in (0, 1):
        assert len(observations[index]) == rounds
        for account_id, status, got, after, pid, default_timeout in observations[index]:
            assert status == 200
            assert got == expected[account_id], "a request saw another account's figures"
            after_pid, role, account_setting, user_setting, timeout, sessions_visible = after
            assert (after_pid, role) == (pid, app_role), "the connection is the same, reused one"
            # Not NULL: the connection has seen the settings, and keeps them empty.
            assert (account_setting, user_setting) == ("", "")
            assert timeout == default_timeout
            assert sessions_visible == 0


def test_the_per_engineer_and_drill_down_endpoints_show_only_the_bound_accounts_rows(
    two_tenants, api_client, become_app_role, monkeypatch, member
):
    account, other_account = two_tenants
    api_client.force_authenticate(member(Role.ADMIN, account=account))
    own_ids = MODELS.handoff_ids(account)
    real_handoffs_with_lag = views.handoffs_with_lag

    def buggy_handoffs(*, account, window, **kwargs):
        """A regression: the drill-down reads the handoffs of an account taken from the wrong place."""
        return real_handoffs_with_lag(account=other_account, window=window, **kwargs)

    monkeypatch.setattr(views, "handoffs_with_lag", buggy_handoffs)
    # As a superuser the bug leaks B's three handoffs: the test can see a leak.
    assert len(api_client.get(URL + "/handoffs", {"period": "7d"}).json()["results"]) == 3
    monkeypatch.undo()

    become_app_role()
    rows = api_client.get(URL + "/handoffs", {"period": "7d"}).json()["results"]
    assert {row["handoff_id"] for row in rows} == own_ids
    engineers = api_client.get(URL + "/by-engineer", {"period": "7d"}).json()["engineers"]
    assert sum(row["n_handoffs_claimed"] for row in engineers) == 2
    csv_lines = b"".join(api_client.get(URL + "/handoffs", {"format": "csv"}).streaming_content).splitlines()
    assert len(csv_lines) == 1 + 2

    monkeypatch.setattr(views, "handoffs_with_lag", buggy_handoffs)
    assert api_client.get(URL + "/handoffs", {"period": "7d"}).json()["results"] == []
