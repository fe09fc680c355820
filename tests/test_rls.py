"""Row-Level Security of the app's own tables: its policies, on PostgreSQL, as the app's own role.

What the policies of the app's tables are and who may read across accounts; the
isolation every request gets, whichever models and policies, is the core
suite's (tests/test_rls_isolation.py).

Every test here runs as the role the app serves as (not owner, not superuser,
no BYPASSRLS): a superuser would bypass the policies and prove nothing. The
data is built first, as the test's superuser; then the transaction switches
role. Where a test shows that RLS hides a row, it first shows the row is
really there, so it cannot pass because the data went missing.
"""

import psycopg
import pytest
from django.db import ProgrammingError, connection, transaction

from flowpilot_analytics import rls
from flowpilot_analytics.selectors import escalation_metrics
from tests.builders import account_ids_visible, nothing_visible, only_visible, set_config

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


def test_catalog_every_table_with_an_account_or_calendar_id_has_rls_enabled_forced_and_a_policy():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
                -- an account's rows, and its business calendar's
                AND a.attname IN ('account_id', 'calendar_id')
            WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
            ORDER BY c.relname
            """
        )
        tables = {name: (enabled, forced, policies) for name, enabled, forced, policies in cursor.fetchall()}
    # The known tables are there, so an empty catalog cannot pass.
    assert set(rls.ACCOUNT_TABLES) <= set(tables)
    unprotected = {name: state for name, state in tables.items() if state[:2] != (True, True) or state[2] < 1}
    assert unprotected == {}, "(RLS enabled, forced, number of policies) of tables left open"


# --- No setting the app role can make reads across accounts ---------------------------------


def test_no_setting_the_app_role_can_make_reads_across_accounts(two_tenants, become_app_role):
    account, other_account = two_tenants
    assert account_ids_visible()["handoff"] == {account.pk, other_account.pk}  # as the owner
    nothing = nothing_visible()
    become_app_role()

    for value in ("on", "ON", "true", "1", "yes"):
        set_config({rls.CROSS_ACCOUNT_SETTING: value})
        assert account_ids_visible() == nothing, f"{rls.CROSS_ACCOUNT_SETTING} = {value!r}"
    set_config({rls.CROSS_ACCOUNT_SETTING: "on", rls.ACCOUNT_SETTING: "", rls.USER_SETTING: ""})
    assert account_ids_visible() == nothing
    # Bound to one account (signed, as the app binds), the mode adds nothing to it.
    rls.bind_account(account)
    set_config({rls.CROSS_ACCOUNT_SETTING: "on"})
    assert account_ids_visible() == only_visible(account)
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
    every = only_visible(account, other_account)

    unbound = account_ids_visible()
    with rls.tenant_transaction():
        rls.bind_account(account)
        bound = account_ids_visible()
        figures_of_other = escalation_metrics(account=other_account, period="7d").n_handoffs_claimed

    if sees_every_account:
        assert unbound == bound == every
        assert figures_of_other == 3
    else:
        assert unbound == nothing_visible()
        assert bound == only_visible(account)
        assert figures_of_other == 0
