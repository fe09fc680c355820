"""The two database roles: the grant_app_role command and the system check that watches the app's role."""

import ast
import secrets
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import ProgrammingError, connection, transaction

import flowpilot_analytics.api
from flowpilot_analytics.db_roles import DEFAULT_APP_ROLE, ensure_app_role, ensure_cross_account_role
from flowpilot_analytics.rls import ACCOUNT_TABLES, CROSS_ACCOUNT_POLICY

pytestmark = pytest.mark.django_db


def rls_warnings():
    """The warnings about the app's own connection (W001/W002); W006, about the cross-account faces, apart."""
    return [
        message for message in run_checks(databases=["default"])
        if message.id in {"flowpilot_analytics.W001", "flowpilot_analytics.W002"}
    ]


@pytest.mark.postgres_only
def test_the_check_warns_when_the_app_connects_as_a_superuser():
    [warning] = rls_warnings()
    assert warning.id == "flowpilot_analytics.W001"
    assert "superuser" in warning.msg and "grant_app_role" in warning.hint


@pytest.mark.postgres_only
def test_the_check_is_silent_for_the_app_role(become_app_role):
    become_app_role()
    assert rls_warnings() == []


@pytest.mark.postgres_only
def test_the_check_warns_when_the_app_role_owns_an_account_table(app_role):
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE session_handoff OWNER TO {app_role}")  # rolled back with the test
        cursor.execute(f"SET LOCAL ROLE {app_role}")
    [warning] = rls_warnings()
    assert "owns" in warning.msg and "session_handoff" in warning.msg


@pytest.mark.postgres_only
def test_grant_app_role_makes_a_role_that_rls_binds(app_role):
    out = StringIO()
    call_command("grant_app_role", app_role, stdout=out)  # idempotent: the role exists already
    assert f"Role {app_role} is ready" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolbypassrls, rolcanlogin, has_table_privilege(%s, 'ai_session', 'SELECT') "
            "FROM pg_roles WHERE rolname = %s",
            [app_role, app_role],
        )
        assert cursor.fetchone() == (False, False, True, True)


@pytest.mark.postgres_only
def test_grant_app_role_refuses_a_role_that_bypasses_rls():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        [superuser] = cursor.fetchone()
    with pytest.raises(CommandError, match=f"{superuser} would bypass Row-Level Security: it is a superuser"):
        call_command("grant_app_role", superuser)


@pytest.mark.parametrize("role", ["App", "flowpilot-app", "x; DROP TABLE ai_session", "", "9lives"])
def test_grant_app_role_refuses_a_name_that_is_not_a_plain_identifier(role):
    with pytest.raises(CommandError, match="role must be a lower-case PostgreSQL identifier"):
        call_command("grant_app_role", role)


def test_grant_app_role_needs_postgresql():
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite run checks the refusal")
    with pytest.raises(CommandError, match="need PostgreSQL"):
        call_command("grant_app_role")


def test_the_check_says_nothing_on_sqlite():
    if connection.vendor == "postgresql":
        pytest.skip("the PostgreSQL runs check the warnings")
    assert rls_warnings() == []


def test_no_api_module_can_reach_the_cross_account_mode():
    api_dir = Path(flowpilot_analytics.api.__file__).parent
    modules = sorted(api_dir.glob("*.py"))
    assert len(modules) >= 5
    for module in modules:
        tree = ast.parse(module.read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert not any("cross_account" in name for name in imported), module.name


# --- What the role is granted: the app's tables, never the schema -------------------------


@pytest.fixture
def fresh_role():
    """A role made inside the test's transaction (CREATE ROLE is rolled back with it), named apart."""
    return f"flowpilot_probe_{secrets.token_hex(4)}"


def granted_tables(role):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, string_agg(privilege_type, ', ' ORDER BY privilege_type) "
            "FROM information_schema.role_table_grants WHERE grantee = %s GROUP BY table_name",
            [role],
        )
        return dict(cursor.fetchall())


def can_read(role, table):
    """Whether ``role`` may SELECT from ``table``: tried for real, in a savepoint."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL ROLE {role}")
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            cursor.execute("RESET ROLE")
        return True
    except ProgrammingError as exc:
        assert "permission denied" in str(exc)
        return False


@pytest.mark.postgres_only
def test_the_role_gets_the_apps_tables_and_reads_the_user_table_nothing_else(fresh_role):
    ensure_app_role(fresh_role)

    grants = granted_tables(fresh_role)
    row_access = "DELETE, INSERT, SELECT, UPDATE"
    assert grants == {
        "flowpilot_analytics_account": row_access,
        "flowpilot_analytics_membership": row_access,
        "ai_session": row_access,
        "ai_session_step": row_access,
        "session_handoff": row_access,
        "flowpilot_analytics_businesscalendar": row_access,
        "flowpilot_analytics_businessinterval": row_access,
        "flowpilot_analytics_closeddate": row_access,
        "auth_user": "SELECT",
        # Written by its triggers (as their owner) only.
        "flowpilot_first_action_index": "SELECT",
        "flowpilot_first_action_index_state": "SELECT",
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_default_acl, aclexplode(defaclacl) AS acl "
            "WHERE acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            [fresh_role],
        )
        assert cursor.fetchone() == (0,), "no default privileges on future tables"
        cursor.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", [fresh_role])
        assert cursor.fetchone() == (False,)
        cursor.execute(
            "SELECT c.relname FROM pg_class c "
            "WHERE CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(%s, c.oid, 'USAGE') END ORDER BY 1",
            [fresh_role],
        )
        sequences = [name for (name,) in cursor.fetchall()]
    assert sequences and all(name.split("_id_seq")[0] in grants for name in sequences)
    assert "auth_user_id_seq" not in sequences, "the user table is read, never written"


@pytest.mark.postgres_only
def test_the_app_role_cannot_read_a_host_table_it_was_not_granted(fresh_role):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE host_invoice (id bigint PRIMARY KEY, total numeric)")  # rolled back
        cursor.execute("INSERT INTO host_invoice VALUES (1, 99.5)")
    ensure_app_role(fresh_role)

    assert can_read(fresh_role, "session_handoff")
    assert can_read(fresh_role, "auth_user")
    assert not can_read(fresh_role, "host_invoice")
    assert not can_read(fresh_role, "django_session")
    assert not can_read(fresh_role, "authtoken_token")


@pytest.mark.postgres_only
def test_extra_apps_and_tables_are_granted_when_named(fresh_role):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE host_invoice (id bigserial PRIMARY KEY)")  # rolled back
    out = StringIO()
    call_command(
        "grant_app_role", fresh_role, "--extra-app", "sessions", "authtoken", "--extra-table", "host_invoice",
        stdout=out,
    )

    assert can_read(fresh_role, "django_session")
    assert can_read(fresh_role, "authtoken_token")
    assert can_read(fresh_role, "host_invoice")
    assert not can_read(fresh_role, "django_admin_log")
    grants = granted_tables(fresh_role)
    assert grants["host_invoice"] == grants["django_session"] == "DELETE, INSERT, SELECT, UPDATE"
    assert "host_invoice, session_handoff" in out.getvalue() and "host_invoice_id_seq" in out.getvalue()


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--extra-app", "billing"], "no installed app has the label 'billing'"),
        (["--extra-table", "no_such_table"], "no table no_such_table in this database"),
    ],
)
def test_an_unknown_extra_is_refused_and_nothing_is_granted(fresh_role, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("grant_app_role", fresh_role, *options)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [fresh_role])
        assert cursor.fetchone() == (0,)


# --- The cross-account role: grant_cross_account_role ------------------------------------


def policy_readers():
    """{table: [roles named in the cross-account policy]} over the tables with account rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, ARRAY(SELECT pg_get_userbyid(r) FROM unnest(p.polroles) AS r ORDER BY 1) "
            "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.polname = %s",
            [CROSS_ACCOUNT_POLICY],
        )
        return dict(cursor.fetchall())


@pytest.mark.postgres_only
def test_grant_cross_account_role_names_the_role_in_the_policy_and_keeps_the_others(
    fresh_role, cross_account_role
):
    out = StringIO()
    call_command("grant_cross_account_role", fresh_role, stdout=out)
    call_command("grant_cross_account_role", fresh_role, stdout=StringIO())  # idempotent

    readers = policy_readers()
    assert set(readers) == set(ACCOUNT_TABLES)
    assert all(sorted(roles) == sorted({cross_account_role, fresh_role}) for roles in readers.values())
    # The app role's grants, without extras: the app's tables, the user table read-only.
    assert granted_tables(fresh_role)["session_handoff"] == "DELETE, INSERT, SELECT, UPDATE"
    assert granted_tables(fresh_role)["auth_user"] == "SELECT"
    assert not can_read(fresh_role, "django_session")
    assert f"Role {fresh_role} is ready" in out.getvalue() and "CROSS_ACCOUNT_DB_ALIAS" in out.getvalue()


@pytest.mark.postgres_only
def test_grant_cross_account_role_refuses_the_app_role_and_a_superuser():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        [superuser] = cursor.fetchone()
    with pytest.raises(CommandError, match="is the app role"):
        call_command("grant_cross_account_role", DEFAULT_APP_ROLE)
    with pytest.raises(CommandError, match="must not serve the cross-account pages: it is a superuser"):
        call_command("grant_cross_account_role", superuser)


@pytest.mark.postgres_only
def test_grant_app_role_refuses_a_cross_account_role(fresh_role):
    ensure_cross_account_role(fresh_role)
    refusal = f"{fresh_role} would bypass Row-Level Security: it is a cross-account role"
    with pytest.raises(CommandError, match=refusal):
        call_command("grant_app_role", fresh_role)


@pytest.mark.postgres_only
def test_the_check_warns_when_the_app_connects_as_a_cross_account_role(become_cross_account_role):
    become_cross_account_role()
    [warning] = rls_warnings()
    assert warning.id == "flowpilot_analytics.W001"
    assert "cross-account role" in warning.msg and "reads every account" in warning.msg


def test_grant_cross_account_role_needs_postgresql():
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite run checks the refusal")
    with pytest.raises(CommandError, match="need PostgreSQL"):
        call_command("grant_cross_account_role")
