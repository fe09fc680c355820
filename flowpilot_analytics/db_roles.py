"""
The PostgreSQL roles the app connects as: the app role, bound by Row-Level Security, and the
cross-account role.

Three roles share the database. The *owner* (the role that runs ``migrate``)
creates and owns the tables. The *app role* (the role in the serving
process's ``DATABASE_URL``) only reads and writes rows: it owns no table, is
not a superuser and has no BYPASSRLS, so the policies always apply to it and
show it one account per transaction. The *cross-account role* serves the
staff-facing faces that read every account (the admin summary, the report, the
app's admin pages) through a database alias of their own
(``FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"]``): a policy names it, so that
it, and no role the app role can become, reads across accounts.

:func:`ensure_app_role` and :func:`ensure_cross_account_role` create each when
missing and grant it what the app needs, table by table (never the whole
schema, never default privileges): docs/security.md argues each grant. The
``grant_app_role`` and ``grant_cross_account_role`` commands run them as the
owner; a host names its own tables (or apps) for the app role as extras.

With a host's own models (``FLOWPILOT_ANALYTICS_*_MODEL``) both roles get ``SELECT``
on the host's tables the metric reads (:func:`host_metric_tables`), and the
app's policies stay on the app's own tables: the host's policies decide what
each role sees of the host's rows.
"""

import re
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection as default_connection

from .rls import CROSS_ACCOUNT_POLICY, account_tables
from .signed_binding import BindingKeyError, store_binding_key

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_APP_ROLE = "flowpilot_app"
DEFAULT_CROSS_ACCOUNT_ROLE = "flowpilot_cross_account"


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
        [[*account_tables(), *host_metric_tables()], role],
    )
    owned = [name for (name,) in cursor.fetchall()]
    if owned:
        reasons.append(f"owns (or is a member of the owner of) {', '.join(owned)}, so it can turn RLS off")
    return reasons


def cross_account_reasons(cursor, role):
    """Why ``role`` reads every account through the cross-account policy (empty when it cannot)."""
    cursor.execute(
        f"""
        SELECT DISTINCT r.rolname FROM pg_policy p
        CROSS JOIN unnest(p.polroles) AS granted(oid)
        JOIN pg_roles r ON r.oid = granted.oid
        WHERE p.polname = '{CROSS_ACCOUNT_POLICY}'
          AND p.polrelid = ANY(SELECT to_regclass(quote_ident(name)) FROM unnest(%s::text[]) AS name)
          AND pg_has_role(%s::name, r.oid, 'MEMBER')
        ORDER BY 1
        """,
        [list(account_tables()), role],
    )
    readers = [name for (name,) in cursor.fetchall()]
    if not readers:
        return []
    which = "is" if readers == [role] else f"is a member of {', '.join(readers)},"
    return [f"{which} a cross-account role (policy {CROSS_ACCOUNT_POLICY}), so it reads every account"]


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


# The first-action index's tables: written only by its triggers (as their owner) and its command.
TRIGGER_WRITTEN_TABLES = ("flowpilot_first_action_index", "flowpilot_first_action_index_state")


def app_tables():
    """The tables the app reads and writes: its own models' (RLS-bound where they hold account rows)."""
    return sorted(_model_tables(apps.get_app_config("flowpilot_analytics")) - set(TRIGGER_WRITTEN_TABLES))


def host_metric_tables():
    """The host's tables the metric reads, when it brings its own models (none with the app's own)."""
    from .field_map import metric_tables

    return sorted({table.name for table in metric_tables()
                   if table.model._meta.app_label != "flowpilot_analytics"})


def app_read_tables():
    """Tables the app only reads: the user table (claimers' names), the host's metric tables, the first-action index's."""
    return sorted({get_user_model()._meta.db_table, *host_metric_tables(), *TRIGGER_WRITTEN_TABLES})


def tables_of_apps(labels):
    """The tables of the installed apps labelled ``labels`` (e.g. ``auth``, ``sessions``)."""
    tables = set()
    for label in labels:
        try:
            tables |= _model_tables(apps.get_app_config(label))
        except LookupError:
            raise AppRoleError(f"no installed app has the label {label!r}") from None
    return sorted(tables)


def _check_role_name(role):
    if not ROLE_NAME.fullmatch(role):
        raise AppRoleError(f"role must be a lower-case PostgreSQL identifier (a-z, 0-9, _), got {role!r}")


def _check_postgresql(connection):
    if connection.vendor != "postgresql":
        raise AppRoleError("database roles and Row-Level Security need PostgreSQL; this database is "
                           f"{connection.vendor}")


def _create_role(cursor, role, quoted):
    """``CREATE ROLE`` unless it exists: LOGIN, no superuser, no BYPASSRLS, no CREATEDB or CREATEROLE."""
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


def _grant(cursor, connection, quoted, tables):
    """USAGE on the tables' schemas, ``tables`` ({name: privileges}), the sequences of the writable ones."""
    quote = connection.ops.quote_name
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
            sequences += [
                sequence["name"] for sequence in connection.introspection.get_sequences(cursor, table)
            ]
    for sequence in sorted(sequences):
        cursor.execute(f"GRANT USAGE, SELECT ON SEQUENCE {quote(sequence)} TO {quoted}")
    return Grants(tables=dict(sorted(tables.items())), sequences=tuple(sorted(sequences)))


def _missing_tables(cursor, tables):
    cursor.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(quote_ident(name)) IS NULL",
        [list(tables)],
    )
    missing = sorted(name for (name,) in cursor.fetchall())
    if missing:
        raise AppRoleError(
            f"no table {', '.join(missing)} in this database: run `migrate` first, or check the names"
        )


def _app_grants(extra_apps=(), extra_tables=()):
    tables = {table: READ_PRIVILEGE for table in app_read_tables()}
    for table in [*app_tables(), *tables_of_apps(extra_apps), *extra_tables]:
        tables[table] = ROW_PRIVILEGES
    return tables


def ensure_app_role(role=DEFAULT_APP_ROLE, *, extra_apps=(), extra_tables=(), connection=default_connection):
    """Create ``role`` (LOGIN, no superuser, no BYPASSRLS) if missing and grant it what the app uses.

    Row privileges on the app's tables, SELECT on the user table, USAGE on the
    sequences of the tables it may write; the same row privileges on the tables of
    ``extra_apps`` (app labels) and on ``extra_tables`` (names), for a host whose
    serving process connects as this role. Refuses a role that would escape
    Row-Level Security or read across accounts. Stores the key the role's
    bindings are signed with (:func:`~flowpilot_analytics.signed_binding.store_binding_key`).
    Returns the :class:`Grants`.
    """
    _check_role_name(role)
    _check_postgresql(connection)
    tables = _app_grants(extra_apps, extra_tables)
    quoted = connection.ops.quote_name(role)
    try:
        with connection.cursor() as cursor:
            _missing_tables(cursor, tables)
            _create_role(cursor, role, quoted)
            reasons = bypass_reasons(cursor, role) + cross_account_reasons(cursor, role)
            if reasons:
                raise AppRoleError(f"role {role} would bypass Row-Level Security: it {'; '.join(reasons)}")
            grants = _grant(cursor, connection, quoted, tables)
    except DatabaseError as exc:
        raise AppRoleError(f"could not set up role {role}: {exc}".strip()) from exc
    try:
        # The role's bindings count only once the database holds the key they are signed with.
        store_binding_key(connection)
    except BindingKeyError as exc:
        raise AppRoleError(str(exc)) from exc
    return grants


def ensure_cross_account_role(role=DEFAULT_CROSS_ACCOUNT_ROLE, *, connection=default_connection):
    """Create ``role`` if missing, grant it the app's tables and name it in the cross-account policy.

    The role gets what the app role gets without extras (row privileges on the
    app's tables, SELECT on the user table): the app's admin pages, which it
    serves, edit rows. The policy :data:`CROSS_ACCOUNT_POLICY` on each table
    with account rows lets it (and the roles already named there) see and write
    every account's rows, with no setting. Refuses the app role's default name
    and a role that bypasses RLS anyway (superuser, BYPASSRLS, an owner).
    Returns the :class:`Grants`.
    """
    _check_role_name(role)
    _check_postgresql(connection)
    if role == DEFAULT_APP_ROLE:
        raise AppRoleError(f"{role} is the app role: the cross-account role must be another one, which the "
                           "app role cannot become")
    tables = _app_grants()
    quote = connection.ops.quote_name
    quoted = quote(role)
    try:
        with connection.cursor() as cursor:
            _missing_tables(cursor, tables)
            _create_role(cursor, role, quoted)
            reasons = bypass_reasons(cursor, role)
            if reasons:
                raise AppRoleError(
                    f"role {role} needs no cross-account policy and must not serve the cross-account pages: "
                    f"it {'; '.join(reasons)}"
                )
            grants = _grant(cursor, connection, quoted, tables)
            for table in account_tables():
                cursor.execute(
                    "SELECT coalesce(array_agg(r.rolname ORDER BY r.rolname), '{}') FROM pg_policy p "
                    "CROSS JOIN unnest(p.polroles) AS granted(oid) JOIN pg_roles r ON r.oid = granted.oid "
                    "WHERE p.polrelid = %s::regclass AND p.polname = %s",
                    [table, CROSS_ACCOUNT_POLICY],
                )
                [named] = cursor.fetchone()
                readers = ", ".join(quote(name) for name in sorted({*named, role}))
                if named:
                    cursor.execute(f"ALTER POLICY {CROSS_ACCOUNT_POLICY} ON {quote(table)} TO {readers}")
                else:
                    cursor.execute(
                        f"CREATE POLICY {CROSS_ACCOUNT_POLICY} ON {quote(table)} FOR ALL TO {readers} "
                        "USING (true) WITH CHECK (true)"
                    )
            return grants
    except DatabaseError as exc:
        raise AppRoleError(f"could not set up role {role}: {exc}".strip()) from exc
