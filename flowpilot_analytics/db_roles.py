"""
The PostgreSQL role the app connects as: bound by Row-Level Security.

Two roles share the database. The *owner* (the role that runs ``migrate``)
creates and owns the tables. The *app role* (the role in the serving
process's ``DATABASE_URL``) only reads and writes rows: it owns no table, is
not a superuser and has no BYPASSRLS, so the policies always apply to it.
:func:`ensure_app_role` creates it when missing and grants it what it needs;
the ``grant_app_role`` command runs it as the owner.
"""

import re

from django.db import DatabaseError, connection as default_connection

from .rls import ACCOUNT_TABLES

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_APP_ROLE = "flowpilot_app"


class AppRoleError(Exception):
    """The app role cannot be set up so that RLS binds it."""


def bypass_reasons(cursor, role):
    """Why ``role`` would escape Row-Level Security (empty when it cannot)."""
    cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [role])
    row = cursor.fetchone()
    if row is None:
        return [f"role {role} does not exist"]
    superuser, bypassrls = row
    reasons = ["is a superuser"] * superuser + ["has BYPASSRLS"] * bypassrls
    cursor.execute(
        """
        SELECT c.relname FROM pg_class c
        WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace
          AND pg_has_role(%s::name, c.relowner, 'MEMBER')
        ORDER BY c.relname
        """,
        [list(ACCOUNT_TABLES), role],
    )
    owned = [name for (name,) in cursor.fetchall()]
    if owned:
        reasons.append(f"owns (or is a member of the owner of) {', '.join(owned)}, so it can turn RLS off")
    return reasons


def ensure_app_role(role=DEFAULT_APP_ROLE, *, connection=default_connection):
    """Create ``role`` (LOGIN, no superuser, no BYPASSRLS) if missing; grant it DML on the schema's tables."""
    if not ROLE_NAME.fullmatch(role):
        raise AppRoleError(f"role must be a lower-case PostgreSQL identifier (a-z, 0-9, _), got {role!r}")
    if connection.vendor != "postgresql":
        raise AppRoleError("database roles and Row-Level Security need PostgreSQL; this database is "
                           f"{connection.vendor}")
    quoted = connection.ops.quote_name(role)
    try:
        with connection.cursor() as cursor:
            # Roles are cluster-wide and several databases may ask at once.
            cursor.execute(
                f"""
                DO $$ BEGIN
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                        CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
                    END IF;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$
                """
            )
            reasons = bypass_reasons(cursor, role)
            if reasons:
                raise AppRoleError(f"role {role} would bypass Row-Level Security: it {'; '.join(reasons)}")
            for statement in (
                f"GRANT USAGE ON SCHEMA public TO {quoted}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
                # Tables and sequences later migrations create (as this owner) too.
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {quoted}",
            ):
                cursor.execute(statement)
    except DatabaseError as exc:
        raise AppRoleError(f"could not set up role {role}: {exc}".strip()) from exc
