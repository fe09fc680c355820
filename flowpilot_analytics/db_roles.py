"""
The PostgreSQL role the app connects as: bound by Row-Level Security.

Two roles share the database. The *owner* (the role that runs ``migrate``)
creates and owns the tables. The *app role* (the role in the serving
process's ``DATABASE_URL``) only reads and writes rows: it owns no table, is
not a superuser and has no BYPASSRLS, so the policies always apply to it.
:func:`ensure_app_role` creates it when missing and grants it what the app
needs, table by table (never the whole schema, never default privileges):
docs/security.md argues each grant. The ``grant_app_role`` command runs it as
the owner; a host names its own tables (or apps) for the role as extras.
"""

import re
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
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


ROW_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
READ_PRIVILEGE = "SELECT"


@dataclass(frozen=True)
class Grants:
    """What :func:`ensure_app_role` granted: ``{table: privileges}`` and the sequences (USAGE, SELECT)."""

    tables: dict
    sequences: tuple

    def describe(self):
        by_privileges = {}
        for table, privileges in self.tables.items():
            by_privileges.setdefault(privileges, []).append(table)
        parts = [f"{privileges} on {', '.join(sorted(names))}" for privileges, names in by_privileges.items()]
        if self.sequences:
            parts.append(f"USAGE, SELECT on the sequences {', '.join(self.sequences)}")
        return "; ".join(parts)


def _model_tables(app_config):
    """The tables of an app's models, many-to-many tables included; models with no table left out."""
    return {
        model._meta.db_table
        for model in app_config.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    }


def app_tables():
    """The tables the app reads and writes: its own models' (RLS-bound where they hold account rows)."""
    return sorted(_model_tables(apps.get_app_config("flowpilot_analytics")))


def app_read_tables():
    """Tables of the host the app only reads: the user table, for the claimers' and members' names."""
    return [get_user_model()._meta.db_table]


def tables_of_apps(labels):
    """The tables of the installed apps labelled ``labels`` (e.g. ``auth``, ``sessions``)."""
    tables = set()
    for label in labels:
        try:
            tables |= _model_tables(apps.get_app_config(label))
        except LookupError:
            raise AppRoleError(f"no installed app has the label {label!r}") from None
    return sorted(tables)


def ensure_app_role(role=DEFAULT_APP_ROLE, *, extra_apps=(), extra_tables=(), connection=default_connection):
    """Create ``role`` (LOGIN, no superuser, no BYPASSRLS) if missing and grant it what the app uses.

    Row privileges on the app's tables, SELECT on the user table, USAGE on the
    sequences of the tables it may write; the same row privileges on the tables of
    ``extra_apps`` (app labels) and on ``extra_tables`` (names), for a host whose
    serving process connects as this role. Returns the :class:`Grants`.
    """
    if not ROLE_NAME.fullmatch(role):
        raise AppRoleError(f"role must be a lower-case PostgreSQL identifier (a-z, 0-9, _), got {role!r}")
    if connection.vendor != "postgresql":
        raise AppRoleError("database roles and Row-Level Security need PostgreSQL; this database is "
                           f"{connection.vendor}")
    tables = {table: READ_PRIVILEGE for table in app_read_tables()}
    for table in [*app_tables(), *tables_of_apps(extra_apps), *extra_tables]:
        tables[table] = ROW_PRIVILEGES
    quote = connection.ops.quote_name
    quoted = quote(role)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(quote_ident(name)) IS NULL",
                [list(tables)],
            )
            missing = sorted(name for (name,) in cursor.fetchall())
            if missing:
                raise AppRoleError(
                    f"no table {', '.join(missing)} in this database: run `migrate` first, or check the names"
                )
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
            cursor.execute(
                "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = ANY(SELECT to_regclass(quote_ident(name)) FROM unnest(%s::text[]) AS name) "
                "ORDER BY 1",
                [list(tables)],
            )
            for (schema,) in cursor.fetchall():
                # Lets the role name the schema's objects; it grants no access to any table.
                cursor.execute(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quoted}")
            sequences = []
            for table, privileges in sorted(tables.items()):
                cursor.execute(f"GRANT {privileges} ON TABLE {quote(table)} TO {quoted}")
                if privileges == ROW_PRIVILEGES:
                    sequences += [sequence["name"] for sequence in
                                  connection.introspection.get_sequences(cursor, table)]
            for sequence in sorted(sequences):
                cursor.execute(f"GRANT USAGE, SELECT ON SEQUENCE {quote(sequence)} TO {quoted}")
    except DatabaseError as exc:
        raise AppRoleError(f"could not set up role {role}: {exc}".strip()) from exc
    return Grants(tables=dict(sorted(tables.items())), sequences=tuple(sorted(sequences)))
