"""The two database roles: the grant_app_role command and the system check that watches the app's role."""

import ast
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import connection

import flowpilot_analytics.api

pytestmark = pytest.mark.django_db


def rls_warnings():
    return [message for message in run_checks(databases=["default"]) if message.id.startswith("flowpilot_analytics.")]


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
