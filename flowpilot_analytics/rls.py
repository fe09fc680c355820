"""
PostgreSQL Row-Level Security: binding the tenant to the database transaction.

The policies (migration ``0002_row_level_security``) let a row of an account
table be seen or written only when its ``account_id`` equals the transaction's
``flowpilot.account_id`` setting (memberships are read-only, and also visible
when their ``user_id`` equals ``flowpilot.user_id``: the request resolves its
account from them). Two exceptions, neither reachable by the app role whatever
it sets: a role named in the ``cross_account_readers`` policy reads every
account, and so does the tables' owner when ``flowpilot.cross_account`` is
``on`` (see :mod:`flowpilot_analytics.cross_account`). No setting, or the empty value a
reused connection keeps after a transaction that set one, matches nothing.

The settings are made with ``set_config(name, value, true)``: local to the
current transaction, so they end with it and never leak to the next request on
a pooled connection (``CONN_MAX_AGE > 0``). That is why everything here runs
inside :func:`tenant_transaction`. On SQLite none of this exists: the
app-level filter by account is the only layer there.
"""

import logging
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from django.db import OperationalError, connections, router, transaction

ACCOUNT_SETTING = "flowpilot.account_id"
USER_SETTING = "flowpilot.user_id"
CROSS_ACCOUNT_SETTING = "flowpilot.cross_account"
STATEMENT_TIMEOUT = "statement_timeout"

# Tables whose rows belong to one account (each has an ``account_id``).
ACCOUNT_TABLES = ("ai_session", "ai_session_step", "session_handoff", "flowpilot_analytics_membership")
# The policy, on each of them, naming the roles that read (and write) every account
# (made by ``grant_cross_account_role``; see :mod:`flowpilot_analytics.db_roles`).
CROSS_ACCOUNT_POLICY = "cross_account_readers"

_tenant_bound = ContextVar("flowpilot_tenant_bound", default=False)

logger = logging.getLogger(__name__)


def tenant_models():
    from .models import AiSession, AiSessionStep, Membership, SessionHandoff

    return (Membership, AiSession, AiSessionStep, SessionHandoff)


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
    token = _tenant_bound.set(True)
    try:
        with ExitStack() as stack:
            aliases = stack.enter_context(transactions(reachable_read_aliases(stack)))
            yield
            for alias in aliases:
                transaction.set_rollback(True, using=alias)
    finally:
        _tenant_bound.reset(token)


def bind_user(user, *, statement_timeout_ms):
    """Lets the transaction read ``user``'s own memberships, within the statement timeout."""
    set_local(
        read_aliases(),
        {
            USER_SETTING: user.pk,
            # Never inherited, whatever the connection was used for before.
            ACCOUNT_SETTING: "",
            CROSS_ACCOUNT_SETTING: "",
            STATEMENT_TIMEOUT: statement_timeout_ms,
        },
    )


def bind_account(account):
    """Lets the transaction read ``account``'s rows (its members included), and no other account's."""
    set_local(read_aliases(), {ACCOUNT_SETTING: account.pk})


def set_local(aliases, values):
    """``set_config(name, value, true)`` for each of ``values`` in one statement, per PostgreSQL alias."""
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
