"""Row-Level Security: the second layer of tenant isolation, on PostgreSQL, as the app's own role.

Every test here runs as the role the app serves as (not owner, not superuser,
no BYPASSRLS): a superuser would bypass the policies and prove nothing. The
data is built first, as the test's superuser; then the transaction switches
role. Where a test shows that RLS hides a row, it first shows the row is
really there, so it cannot pass because the data went missing.
"""

import json
import threading
import wsgiref.util
from datetime import timedelta
from io import BytesIO, StringIO

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.db import ProgrammingError, connection, connections, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics import rls
from flowpilot_analytics.api import views
from flowpilot_analytics.cross_account import CrossAccountRefused, analytics_cross_account
from flowpilot_analytics.factories import (
    AccountFactory,
    AiSessionFactory,
    AiSessionStepFactory,
    MembershipFactory,
    UserFactory,
)
from flowpilot_analytics.models import AiSession, AiSessionStep, Membership, SessionHandoff
from flowpilot_analytics.selectors import escalation_metrics, escalation_metrics_by_account
from tests.builders import claimed_handoff, figures

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]

URL = "/api/v1/analytics/flowpilot/escalations"
TENANT_MODELS = (AiSession, AiSessionStep, SessionHandoff, Membership)


def account_ids_visible():
    """The account ids of every row each tenant table shows, queried with no filter at all."""
    return {model.__name__: set(model.objects.values_list("account_id", flat=True)) for model in TENANT_MODELS}


@pytest.fixture
def two_tenants(account, other_account, member):
    """Both accounts with data of the last hours and an engineer each; B's figures differ from A's."""
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=10)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=20)
    for hours in range(1, 4):
        claimed_handoff(other_account, claimed_at=now - timedelta(hours=hours), lag=500)
    member(Membership.Role.ENGINEER, account=account)
    member(Membership.Role.ENGINEER, account=other_account)
    return account, other_account


def test_the_app_role_is_bound_by_rls(app_role, become_app_role):
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [app_role])
        assert cursor.fetchone() == (False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_class WHERE relname = ANY(%s) AND pg_has_role(%s::name, relowner, 'MEMBER')",
            [list(rls.ACCOUNT_TABLES), app_role],
        )
        assert cursor.fetchone() == (0,), "the app role must own none of the account tables"
    become_app_role()
    with connection.cursor() as cursor:
        for table in rls.ACCOUNT_TABLES:
            cursor.execute("SELECT row_security_active(%s)", [table])
            assert cursor.fetchone() == (True,), table


def test_catalog_every_table_with_an_account_id_has_rls_enabled_forced_and_a_policy():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
            ORDER BY c.relname
            """
        )
        tables = {name: (enabled, forced, policies) for name, enabled, forced, policies in cursor.fetchall()}
    # The known tables are there, so an empty catalog cannot pass.
    assert set(rls.ACCOUNT_TABLES) <= set(tables)
    unprotected = {name: state for name, state in tables.items() if state[:2] != (True, True) or state[2] < 1}
    assert unprotected == {}, "(RLS enabled, forced, number of policies) of tables left open"


def test_without_a_setting_the_app_role_sees_no_rows_and_no_error(two_tenants, become_app_role):
    account, other_account = two_tenants
    assert all(ids == {account.pk, other_account.pk} for ids in account_ids_visible().values())

    become_app_role()

    assert account_ids_visible() == {model.__name__: set() for model in TENANT_MODELS}
    assert figures(escalation_metrics(account=account, period="7d")) == (0, 0, None, None, None)


def test_an_empty_setting_matches_nothing(two_tenants, become_app_role):
    """'' is what a pooled connection holds once a transaction that set the account has ended."""
    become_app_role()
    rls.set_local(["default"], {rls.ACCOUNT_SETTING: "", rls.USER_SETTING: "", rls.CROSS_ACCOUNT_SETTING: ""})

    assert account_ids_visible() == {model.__name__: set() for model in TENANT_MODELS}


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

    assert visible == {"AiSession": {account.pk}, "AiSessionStep": {account.pk},
                       "SessionHandoff": {account.pk}, "Membership": set()}
    assert figures(both[account.pk]) == figures(every[account.pk]) == expected
    assert figures(both[other_account.pk]) == figures(every[other_account.pk]) == (0, 0, None, None, None)


def test_the_endpoint_with_a_wrong_account_bug_returns_nothing_of_the_other_tenant(
    two_tenants, api_client, become_app_role, monkeypatch
):
    account, other_account = two_tenants
    engineer = Membership.objects.get(account=account).user
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


def test_a_poisoned_step_of_another_account_does_not_change_the_figures(
    account, other_account, become_app_role, now
):
    victim = claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=60)
    # Account B's step pointing at A's session, one second after A's claim.
    poison = AiSessionStepFactory(
        session=victim.session, account=other_account, created_at=victim.claimed_at + timedelta(seconds=1)
    )
    first_step = AiSessionStep.objects.filter(session=victim.session, created_at__gt=victim.claimed_at)
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


def test_writes_outside_the_bound_account_are_refused(two_tenants, become_app_role):
    account, other_account = two_tenants
    session = AiSession.objects.filter(account=account).first()
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        AiSessionStepFactory(session=session, account=account)  # its own account: allowed
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            AiSessionStepFactory(session=session, account=other_account)


def test_cross_account_mode_reads_and_writes_every_account(two_tenants, become_app_role):
    account, other_account = two_tenants
    become_app_role()

    with analytics_cross_account():
        by_account = escalation_metrics_by_account(period="7d")
        AiSessionFactory(account=other_account)
        sessions = AiSession.objects.count()
    outside = escalation_metrics_by_account(period="7d")

    assert by_account[account.pk].n_handoffs_claimed == 2
    assert by_account[other_account.pk].n_handoffs_claimed == 3
    assert sessions == 6
    assert {pk: metrics.n_handoffs_claimed for pk, metrics in outside.items()} == {
        account.pk: 0, other_account.pk: 0
    }


def test_seed_demo_runs_as_the_app_role_in_cross_account_mode(become_app_role):
    become_app_role()
    call_command("seed_demo", stdout=StringIO())

    assert account_ids_visible()["SessionHandoff"] == set(), "the mode ended with the command"
    with analytics_cross_account():
        assert SessionHandoff.objects.values("account_id").distinct().count() == 2


def test_the_apps_admin_lists_read_every_account_and_the_mode_ends_with_them(
    two_tenants, become_app_role, admin_client
):
    """The stock admin site: the app's own pages enter the mode (the widget's page: see below)."""
    admin_client.get("/admin/")  # the session and the content types, before the role switch
    become_app_role()

    sessions = admin_client.get("/admin/flowpilot_analytics/aisession/")

    assert sessions.status_code == 200
    assert sessions.context["cl"].result_count == 5
    assert len(sessions.context["cl"].result_list) == 5, "the page's rows are read inside the mode too"
    assert AiSession.objects.count() == 0, "outside the app's admin pages, the mode is off"


def test_cross_account_mode_is_refused_inside_an_account_scoped_request(account):
    with rls.tenant_transaction(), pytest.raises(CrossAccountRefused):
        with analytics_cross_account():
            pass


def test_the_api_turns_cross_account_mode_off_for_its_request(two_tenants, api_client, become_app_role):
    """Even a connection left in cross-account mode serves the API only the caller's account."""
    account, _ = two_tenants
    api_client.force_authenticate(Membership.objects.get(account=account).user)
    become_app_role()
    rls.set_local(["default"], {rls.CROSS_ACCOUNT_SETTING: "on"})
    assert account_ids_visible()["AiSession"] == {account.pk, two_tenants[1].pk}

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
    accounts = [AccountFactory(slug="rls-a"), AccountFactory(slug="rls-b")]
    for index, account in enumerate(accounts):
        for hours in range(1, index + 3):  # A: 2 handoffs, B: 3
            claimed_handoff(account, claimed_at=now - timedelta(hours=hours), lag=10 * (index + 1))
    # One user, engineer of both: only the account parameter differs between requests.
    user = UserFactory()
    for account in accounts:
        MembershipFactory(user=user, account=account, role=Membership.Role.ENGINEER)
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
                        "(SELECT count(*) FROM ai_session)",
                        [rls.ACCOUNT_SETTING, rls.USER_SETTING],
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


def test_the_report_command_as_the_app_role_shows_every_accounts_figures(two_tenants, become_app_role):
    account, other_account = two_tenants
    become_app_role()
    out = StringIO()

    call_command("escalation_report", "--period", "7d", "--format", "json", stdout=out)

    claimed = {row["account"]: row["n_handoffs_claimed"] for row in json.loads(out.getvalue())}
    assert claimed == {account.slug: 2, other_account.slug: 3}
    assert account_ids_visible()["SessionHandoff"] == set(), "the mode ended with the command"


def test_the_admin_widget_as_the_app_role_shows_every_accounts_figures(two_tenants, become_app_role, client):
    account, other_account = two_tenants
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    become_app_role()

    page = client.get("/admin/flowpilot_analytics/escalationsummarypage/")

    assert page.status_code == 200
    shown = {row.account.pk: row for row in page.context["escalation_summary"].accounts}
    assert shown[account.pk].for_period("7d").n_handoffs_claimed == 2
    assert shown[other_account.pk].for_period("7d").n_handoffs_claimed == 3


def test_the_per_engineer_and_drill_down_endpoints_show_only_the_bound_accounts_rows(
    two_tenants, api_client, become_app_role, monkeypatch, member
):
    account, other_account = two_tenants
    api_client.force_authenticate(member(Membership.Role.ADMIN, account=account))
    own_ids = set(SessionHandoff.objects.filter(account=account).values_list("pk", flat=True))
    real_handoffs_with_lag = views.handoffs_with_lag

    def buggy_handoffs(*, account, window):
        """A regression: the drill-down reads the handoffs of an account taken from the wrong place."""
        return real_handoffs_with_lag(account=other_account, window=window)

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
