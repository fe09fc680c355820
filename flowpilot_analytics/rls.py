"""
PostgreSQL Row-Level Security: binding the tenant to the database transaction.

The policies (migrations ``0002_row_level_security``, ``0010_signed_tenant_binding``)
let a row of an account table be seen or written only when its ``account_id``
equals the transaction's ``flowpilot.account_id`` setting (memberships are
read-only, and also visible when their ``user_id`` equals ``flowpilot.user_id``:
the request resolves its account from them), and only when the binding is
signed: :func:`bind` sets, in the same statement, an HMAC of both ids and the
connection's backend pid, which the policies' functions check against a key the
app role cannot read (:mod:`flowpilot_analytics.signed_binding`). An id set by
any other means matches nothing. Two exceptions, neither reachable by the app role whatever
it sets: a role named in the ``cross_account_readers`` policy reads every
account, and so does the tables' owner when ``flowpilot.cross_account`` is
``on`` (see :mod:`flowpilot_analytics.cross_account`). No setting, or the empty value a
reused connection keeps after a transaction that set one, matches nothing.

The settings are made with ``set_config(name, value, true)``: local to the
current transaction, so they end with it and never leak to the next request on
a pooled connection (``CONN_MAX_AGE > 0``). That is why everything here runs
inside :func:`tenant_transaction`. On SQLite none of this exists: the
app-level filter by account is the only layer there.

A host that brings its own models (``FLOWPILOT_ANALYTICS_*_MODEL``) protects its
tables with its own policies, keyed on its own settings: the app installs no
policy there, and sets, beside its own, the settings the host names in
``FLOWPILOT_ANALYTICS["RLS"]`` (:func:`host_settings`) in the same statements.
"""

import logging
import re
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from django.db import OperationalError, connections, router, transaction

from .conf import DEFAULT_RLS, app_settings

ACCOUNT_SETTING = "flowpilot.account_id"
USER_SETTING = "flowpilot.user_id"
CROSS_ACCOUNT_SETTING = "flowpilot.cross_account"
STATEMENT_TIMEOUT = "statement_timeout"
WORK_MEM = "work_mem"

# Tables of the app's own models whose rows belong to one account (an ``account_id``, or the
# business calendar's, for its intervals and closed dates); those of them in use (not swapped
# for a host's models): account_tables().
ACCOUNT_TABLES = (
    "ai_session",
    "ai_session_step",
    "session_handoff",
    "flowpilot_analytics_membership",
    "flowpilot_analytics_businesscalendar",
    "flowpilot_analytics_businessinterval",
    "flowpilot_analytics_closeddate",
    "flowpilot_first_action_index",
)
# The value of the cross-account settings (the app's, and the host's) in the cross-account mode.
ON = "on"
# The policy, on each of them, naming the roles that read (and write) every account
# (made by ``grant_cross_account_role``; see :mod:`flowpilot_analytics.db_roles`).
CROSS_ACCOUNT_POLICY = "cross_account_readers"

# What the policies compare with: the bound account and user, each NULL unless the transaction's
# binding is signed (flowpilot_analytics.signed_binding). Scalar subqueries: evaluated once per
# statement (an InitPlan), not once per row.
BOUND_ACCOUNT = "(SELECT flowpilot_analytics_bound_account())"
BOUND_USER = "(SELECT flowpilot_analytics_bound_user())"
TENANT_POLICY = "tenant_isolation"
OWNER_CROSS_ACCOUNT_POLICY = "owner_cross_account_mode"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def tenant_policy_sql(table, *, account_column="account_id"):
    """The statements (PostgreSQL) giving an app table of account rows its Row-Level Security.

    RLS enabled and forced (the owner too), the tenant's policy (rows of the
    signed-bound account only, read and written) and the owner's cross-account
    mode, each dropped first if there: a migration adding a table of account rows
    runs them (``RunSQL(tenant_policy_sql(t), drop_tenant_policy_sql(t))``), and
    adds the table to :data:`ACCOUNT_TABLES` so that ``grant_cross_account_role``
    names the cross-account role on it too.
    """
    if not (_TABLE_NAME.fullmatch(table) and _TABLE_NAME.fullmatch(account_column)):
        raise ValueError(f"not a plain lower-case table and column name: {table!r}, {account_column!r}")
    tenant = f"{account_column} = {BOUND_ACCOUNT}"
    # Only a member of the table's owner (migrate, seed_demo, data migrations) may use the mode;
    # NULL, so no row, when the catalog row is missing (as in migration 0006).
    owner_mode = (
        f"(SELECT current_setting('{CROSS_ACCOUNT_SETTING}', true) = '{ON}' "
        f"AND pg_has_role(c.relowner, 'MEMBER') FROM pg_catalog.pg_class c WHERE c.oid = '{table}'::regclass)"
    )
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {TENANT_POLICY} ON {table}",
        f"CREATE POLICY {TENANT_POLICY} ON {table} FOR ALL USING ({tenant}) WITH CHECK ({tenant})",
        f"DROP POLICY IF EXISTS {OWNER_CROSS_ACCOUNT_POLICY} ON {table}",
        f"CREATE POLICY {OWNER_CROSS_ACCOUNT_POLICY} ON {table} FOR ALL "
        f"USING ({owner_mode}) WITH CHECK ({owner_mode})",
    ]


def drop_tenant_policy_sql(table):
    """The reverse of :func:`tenant_policy_sql` for a table it protected (the table stays)."""
    return [
        f"DROP POLICY IF EXISTS {TENANT_POLICY} ON {table}",
        f"DROP POLICY IF EXISTS {OWNER_CROSS_ACCOUNT_POLICY} ON {table}",
        f"DROP POLICY IF EXISTS {CROSS_ACCOUNT_POLICY} ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


_tenant_bound = ContextVar("flowpilot_tenant_bound", default=False)
# The user bound in the current tenant transaction (its id as text, "" when none): the account's binding
# is signed with it.
_bound_user = ContextVar("flowpilot_bound_user", default="")

logger = logging.getLogger(__name__)


def tenant_models():
    """The models in use holding account data: the app's memberships, then the metric's models."""
    from .models import Membership, get_account_model, get_handoff_model, get_session_model, get_step_model

    return (Membership, get_account_model(), get_session_model(), get_step_model(), get_handoff_model())


def account_tables():
    """The tables of :data:`ACCOUNT_TABLES` in use: the app's own policies are on these, and only these."""
    from django.apps import apps

    in_use = {model._meta.db_table for model in apps.get_app_config("flowpilot_analytics").get_models()}
    return tuple(table for table in ACCOUNT_TABLES if table in in_use)


def host_settings():
    """``FLOWPILOT_ANALYTICS["RLS"]``: the host's own settings, each name or ``None`` (not set)."""
    return {**DEFAULT_RLS, **(app_settings.RLS or {})}


def read_aliases():
    """The databases reads of account data go to (a router may send them to a replica)."""
    return sorted({router.db_for_read(model) for model in tenant_models()})


def write_aliases():
    return sorted({router.db_for_write(model) for model in tenant_models()})


def in_tenant_scope():
    """Whether the current code runs inside :func:`tenant_transaction`."""
    return _tenant_bound.get()


@contextmanager
def transactions(aliases):
    """One transaction (or savepoint) on each of ``aliases``, for the length of the block."""
    with ExitStack() as stack:
        for alias in aliases:
            stack.enter_context(transaction.atomic(using=alias))
        yield aliases


def reachable_read_aliases(stack):
    """:func:`read_aliases`, reading the primary for the rest of ``stack`` when a replica cannot be reached.

    Each replica is connected to now, before anything is read (a kept-alive
    connection is health-checked as Django does on its first query); one that
    refuses makes the block read the primary instead, logged as a warning: the
    figures come from the primary's own rows, just without the replica's relief.
    """
    from .routers import PRIMARY, reading_from_primary

    aliases = read_aliases()
    for alias in aliases:
        if alias == PRIMARY:
            continue
        try:
            connections[alias].cursor().close()
        except OperationalError as exc:
            logger.warning("Database %r is unreachable, the analytics reads use the primary: %s", alias, exc)
            stack.enter_context(reading_from_primary())
            return read_aliases()
    return aliases


@contextmanager
def tenant_transaction():
    """The transaction of one read-only request, on every database its reads use.

    It is always rolled back: an account-scoped request never writes, and the
    rollback takes every setting made inside with it, even when the block is
    nested in an outer transaction (``ATOMIC_REQUESTS``, a test) where a
    released savepoint would keep them.
    """
    token, user_token = _tenant_bound.set(True), _bound_user.set("")
    try:
        with ExitStack() as stack:
            aliases = stack.enter_context(transactions(reachable_read_aliases(stack)))
            yield
            for alias in aliases:
                transaction.set_rollback(True, using=alias)
    finally:
        _bound_user.reset(user_token)
        _tenant_bound.reset(token)


def with_host_settings(values):
    """``values`` of the app's own settings, and the same values under the host's names (when it has them)."""
    host = host_settings()
    mirrored = {
        host[key]: values[setting]
        for key, setting in (("user_setting", USER_SETTING), ("account_setting", ACCOUNT_SETTING),
                             ("cross_account_setting", CROSS_ACCOUNT_SETTING))
        if host[key] and setting in values
    }
    return {**values, **mirrored}


def bind_user(user, *, statement_timeout_ms):
    """Lets the transaction read ``user``'s own memberships, within the statement timeout (and its ``work_mem``)."""
    _bound_user.set(str(user.pk))
    bind(
        read_aliases(),
        with_host_settings({
            USER_SETTING: user.pk,
            # Never inherited, whatever the connection was used for before.
            ACCOUNT_SETTING: "",
            CROSS_ACCOUNT_SETTING: "",
            STATEMENT_TIMEOUT: statement_timeout_ms,
            **request_memory(),
        }),
    )


def request_memory():
    """``{"work_mem": FLOWPILOT_ANALYTICS["WORK_MEM"]}`` for an analytics transaction, ``{}`` for the server's."""
    return {} if app_settings.WORK_MEM is None else {WORK_MEM: app_settings.WORK_MEM}


def bind_account(account):
    """Lets the transaction read the rows of ``account`` (or of that id), its members included, and no other's."""
    account_id = getattr(account, "pk", account)
    bind(read_aliases(), with_host_settings({ACCOUNT_SETTING: account_id, USER_SETTING: _bound_user.get()}))


def unbind_account():
    """Lets the transaction read no account's rows again, as after :func:`bind_user`."""
    bind(read_aliases(), with_host_settings({ACCOUNT_SETTING: "", USER_SETTING: _bound_user.get()}))


def bind(aliases, values):
    """:func:`set_local` of ``values``, signed: with the token the policies' functions check, per alias.

    The token covers the account and user ids in ``values`` (the empty string when
    absent) and each connection's backend pid (known to the driver: no query), in
    the same statement as the settings (:mod:`flowpilot_analytics.signed_binding`).
    """
    from .signed_binding import BINDING_SETTING, backend_pid, binding_token

    account_id, user_id = (str(values.get(name, "")) for name in (ACCOUNT_SETTING, USER_SETTING))
    for alias in aliases:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        token = binding_token(account_id, user_id, backend_pid(connection))
        set_local([alias], {**values, BINDING_SETTING: token})


def set_local(aliases, values):
    """``set_config(name, value, true)`` for each of ``values`` in one statement, per PostgreSQL alias."""
    if not values:
        return
    sql = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(values))
    params = [part for name, value in values.items() for part in (name, str(value))]
    for alias in aliases:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        if not connection.in_atomic_block:
            # Outside a transaction the setting would vanish with the statement.
            raise RuntimeError(f"set_local() needs a transaction on database {alias!r}")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
