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
from io import BytesIO

import psycopg
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import ProgrammingError, connection, connections, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from flowpilot_analytics import rls
from flowpilot_analytics.api import views
from flowpilot_analytics.factories import (
    AccountFactory,
    AiSessionStepFactory,
    MembershipFactory,
    UserFactory,
)
from flowpilot_analytics.models import AiSession, AiSessionStep, Membership, SessionHandoff
from flowpilot_analytics.selectors import escalation_metrics, escalation_metrics_by_account
from tests.builders import TENANT_MODELS, account_ids_visible, claimed_handoff, figures

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]

URL = "/api/v1/analytics/flowpilot/escalations"


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

    # The bound account's members too (an admin names them), never another account's.
    assert visible == {"AiSession": {account.pk}, "AiSessionStep": {account.pk},
                       "SessionHandoff": {account.pk}, "Membership": {account.pk}}
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


# --- No setting the app role can make reads across accounts ---------------------------------


def set_config(values):
    """``set_config(name, value, true)`` as any SQL running as the app role could (injected, or a bug)."""
    with connection.cursor() as cursor:
        for name, value in values.items():
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def test_no_setting_the_app_role_can_make_reads_across_accounts(two_tenants, become_app_role):
    account, other_account = two_tenants
    assert account_ids_visible()["SessionHandoff"] == {account.pk, other_account.pk}  # as the owner
    nothing = {model.__name__: set() for model in TENANT_MODELS}
    become_app_role()

    for value in ("on", "ON", "true", "1", "yes"):
        set_config({rls.CROSS_ACCOUNT_SETTING: value})
        assert account_ids_visible() == nothing, f"{rls.CROSS_ACCOUNT_SETTING} = {value!r}"
    set_config({rls.CROSS_ACCOUNT_SETTING: "on", rls.ACCOUNT_SETTING: "", rls.USER_SETTING: ""})
    assert account_ids_visible() == nothing
    # Bound to one account, the mode adds nothing to it.
    set_config({rls.CROSS_ACCOUNT_SETTING: "on", rls.ACCOUNT_SETTING: str(account.pk)})
    assert account_ids_visible() == {model.__name__: {account.pk} for model in TENANT_MODELS}
    # Turning row security off does not lift the policies for a role bound by them: it is an error.
    with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL row_security = off")
            cursor.execute("SELECT count(*) FROM session_handoff")


def login_as(role):
    """A connection of its own to the test database, logged in as ``role`` (SET ROLE in a superuser's
    session proves nothing here: PostgreSQL checks SET ROLE against the session's login)."""
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"] or None, port=settings["PORT"] or None, dbname=settings["NAME"], user=role,
        password=settings["PASSWORD"] or None, autocommit=True,
    )


def test_the_app_role_cannot_become_a_role_that_reads_across_accounts(app_role, cross_account_role):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'session_handoff'")
        [owner] = cursor.fetchone()
        cursor.execute(
            "SELECT pg_has_role(%s, %s, 'MEMBER'), pg_has_role(%s, %s, 'MEMBER')",
            [app_role, cross_account_role, app_role, owner],
        )
        assert cursor.fetchone() == (False, False)

    with login_as(app_role) as app:
        assert app.execute("SELECT current_user").fetchone() == (app_role,)
        for statement in (f"SET ROLE {cross_account_role}", f"SET ROLE {owner}",
                          f"SET SESSION AUTHORIZATION {owner}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
        assert app.execute("SELECT current_user").fetchone() == (app_role,)


def test_catalog_only_the_owner_and_the_cross_account_role_may_read_across_accounts(
    app_role, cross_account_role
):
    """Every policy of an account table: the tenant's, the owner's mode, or the named cross-account roles."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, p.polname, p.polcmd,
                   ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END
                         FROM unnest(p.polroles) AS r ORDER BY 1)
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
            WHERE c.relname = ANY(%s) ORDER BY 1, 2
            """,
            [list(rls.ACCOUNT_TABLES)],
        )
        policies = cursor.fetchall()
    by_table = {}
    for table, name, command, roles in policies:
        by_table.setdefault(table, {})[name] = (command, roles)
    for table in rls.ACCOUNT_TABLES:
        own = "account_memberships" if table == "flowpilot_analytics_membership" else "tenant_isolation"
        assert set(by_table[table]) == {own, "owner_cross_account_mode", rls.CROSS_ACCOUNT_POLICY}, table
        command, readers = by_table[table][rls.CROSS_ACCOUNT_POLICY]
        assert cross_account_role in readers
        assert "public" not in readers and app_role not in readers, table
        assert by_table[table]["owner_cross_account_mode"][1] == ["public"]  # the expression checks ownership


@pytest.mark.parametrize(
    ("become", "sees_every_account"),
    [("become_app_role", False), ("become_cross_account_role", True)],
)
def test_what_each_serving_role_sees_with_no_setting_and_with_an_account_bound(
    two_tenants, request, become, sees_every_account
):
    """The RLS tests, as both roles: the app role one account at a time, the cross-account role every one."""
    account, other_account = two_tenants
    request.getfixturevalue(become)()
    every = {model.__name__: {account.pk, other_account.pk} for model in TENANT_MODELS}

    unbound = account_ids_visible()
    with rls.tenant_transaction():
        rls.bind_account(account)
        bound = account_ids_visible()
        figures_of_other = escalation_metrics(account=other_account, period="7d").n_handoffs_claimed

    if sees_every_account:
        assert unbound == bound == every
        assert figures_of_other == 3
    else:
        assert unbound == {model.__name__: set() for model in TENANT_MODELS}
        assert bound == {model.__name__: {account.pk} for model in TENANT_MODELS}
        assert figures_of_other == 0


def test_the_api_ignores_a_cross_account_setting_left_on_the_connection(
    two_tenants, api_client, become_app_role
):
    """Even a connection where something switched the setting on serves the API only the caller's account."""
    account, _ = two_tenants
    api_client.force_authenticate(Membership.objects.get(account=account).user)
    become_app_role()
    set_config({rls.CROSS_ACCOUNT_SETTING: "on"})
    assert account_ids_visible()["AiSession"] == set()

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
