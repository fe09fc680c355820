"""
The first-action index: an opt-in accelerator keeping each claimed handoff's first action in a table.

The metric's definition is the probe (:func:`~flowpilot_analytics.selectors.first_action_subquery`):
the earliest step of the same session created strictly after the claim, one
correlated index probe per handoff. On PostgreSQL, with
``FLOWPILOT_ANALYTICS["FIRST_ACTION_INDEX"]`` on, the figures read the same value
from :class:`~flowpilot_analytics.models.FirstActionIndex` instead (an index-only
scan of ``(account_id, claimed_at)``), kept equal to the probe by triggers on the
step and handoff tables in use, in the same transaction as each write:

* a step inserted (a trigger per row): the claimed handoffs of its session
  claimed before it, whose first action is later (or none), take its instant;
* a step deleted, or updated (instant, session, account), per statement: the
  handoffs whose first action it was are probed again, then the new values
  apply as an insert;
* a handoff claimed, re-claimed, unclaimed, moved to another session or deleted:
  its row is written again from the probe (or deleted);
* a table truncated: the rows go (handoffs) or lose their first action (steps).

Concurrent writers. Under READ COMMITTED a step and a claim of the same session
committed side by side would each miss the other (the step's trigger does not
see the uncommitted claim's row; the claim's probe does not see the uncommitted
step). Every trigger therefore first takes a transaction-level advisory lock
on the bucket of each session it touches (:data:`LOCK_BUCKETS`; several in
ascending order within a statement), then reads with a fresh snapshot (each
statement of a PL/pgSQL function takes one under READ COMMITTED): whichever
comes second waits for the first to commit and then sees its rows. A step
insert takes its lock *shared*: inserts never wait for one another (two
inserts lowering the same row are ordered by that row's lock, and the second
re-reads it after the first commits); a claim, a step update or delete takes it
exclusive. Writers under REPEATABLE READ or SERIALIZABLE keep their first
snapshot and are not covered (docs/first-action-index.md).

The readers switch to the table only when it is *ready*: triggers installed on
the tables in use (``install``) and every claimed handoff written (``backfill``);
otherwise they probe, and the system check ``W040`` says why. ``verify``
compares the table with the probe. ``manage.py first_action_index`` runs these.
"""

import dataclasses
import json
import time
from dataclasses import dataclass

from django.core.signals import setting_changed
from django.db import connections, router, transaction
from django.db.utils import OperationalError
from django.utils import timezone

from . import rls
from .conf import app_settings
from .field_map import all_handoffs, metric_tables

TABLE = "flowpilot_first_action_index"
STATE_TABLE = "flowpilot_first_action_index_state"
PREFIX = "flowpilot_first_action"
# The advisory locks serialising the writers of a session: (LOCK_CLASS, the session's bucket).
# Buckets rather than one lock per session bound the locks a bulk write takes (PostgreSQL's
# lock table holds max_locks_per_transaction x max_connections in all); two sessions of a
# bucket only make their writers wait for each other's commit.
LOCK_CLASS = 0x0F1A0001
LOCK_BUCKETS = 512
# How long a process trusts what it last read of the state (seconds).
STATE_TTL = 5.0
BACKFILL_BATCH = 5000


# --- Row-Level Security of the table ----------------------------------------------------
# Its policies are the app's tenant tables' own: created by migration 0009, signed by 0010
# (rls.tenant_policy_sql); the cross-account role's by grant_cross_account_role (rls.ACCOUNT_TABLES).
# `install` adds one: the role that installs the triggers (the table's owner, who owns their
# functions) reads and writes every row while a trigger runs. Without it, a non-superuser
# owner's trigger statements would pass the table's policies only through the cross-account
# mode, after the tenant policy's check (its HMAC, some 10 µs per statement). PostgreSQL tries
# permissive policies in descending name order: this one, named after the others, first.
TRIGGER_POLICY = "writes_by_first_action_triggers"


def trigger_policy_statements():
    """Dropping, then creating :data:`TRIGGER_POLICY` for the current role (the installer)."""
    depth = "pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 0"
    return [
        f"DROP POLICY IF EXISTS {TRIGGER_POLICY} ON {TABLE}",
        f"CREATE POLICY {TRIGGER_POLICY} ON {TABLE} FOR ALL TO CURRENT_USER USING ({depth}) WITH CHECK ({depth})",
    ]


# --- The tables in use, and the triggers' SQL ---------------------------------------------


def q(name):
    """A quoted identifier (or a dotted schema.table, each part quoted)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def signature(tables=None):
    """The tables and columns the triggers are generated for, as stored in the state row (JSON)."""
    tables = tables or metric_tables()
    return json.dumps({
        "step": {"table": tables.step.name, **tables.step.columns},
        "handoff": {"table": tables.handoff.name, **tables.handoff.columns},
    }, sort_keys=True)


@dataclass(frozen=True)
class Names:
    """The trigger-facing names of the tables in use (from a :func:`signature`)."""

    step: str
    step_session: str
    step_created_at: str
    step_account: str | None
    handoff: str
    handoff_pk: str
    handoff_account: str
    handoff_session: str
    handoff_claimed_at: str
    handoff_claimed_by: str

    @classmethod
    def from_signature(cls, text):
        data = json.loads(text)
        step, handoff = data["step"], data["handoff"]
        return cls(step["table"], step["session"], step["created_at"], step["account"], handoff["table"],
                   handoff["pk"], handoff["account"], handoff["session"], handoff["claimed_at"],
                   handoff["claimed_by"])


def _op(operator):
    return f"OPERATOR(pg_catalog.{operator})"


def _bucket(session):
    """SQL: the lock bucket of a session id (every name qualified: the step insert's function has no search_path)."""
    return f"(pg_catalog.hashint8({session}) {_op('&')} {LOCK_BUCKETS - 1})"


def _step_column_names(names):
    """The step columns the first action depends on: session, instant (and account)."""
    return [names.step_session, names.step_created_at, *([names.step_account] if names.step_account else [])]


def _lock_sessions(select_sessions):
    """SQL taking the advisory lock of the bucket of each session ``select_sessions`` yields, in ascending order."""
    return (f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, b) "
            f"FROM (SELECT DISTINCT {_bucket('s')} AS b FROM ({select_sessions}) AS sessions (s) "
            f"WHERE s IS NOT NULL ORDER BY 1) AS ordered;")


def _probe(names, *, session, account, claimed_at):
    """The probe in SQL (the definition): the earliest step of the session strictly after the claim."""
    account_match = f" AND st.{q(names.step_account)} = {account}" if names.step_account else ""
    return (f"(SELECT st.{q(names.step_created_at)} FROM {q(names.step)} st "
            f"WHERE st.{q(names.step_session)} = {session}{account_match} "
            f"AND st.{q(names.step_created_at)} > {claimed_at} "
            f"ORDER BY st.{q(names.step_created_at)} LIMIT 1)")


def _apply_new_steps(names, steps, table):
    """SQL lowering the first action of the handoffs each of ``steps`` (a relation) comes first after."""
    # Per step, an index probe of its session's rows (LATERAL ... OFFSET 0 keeps the planner from
    # flattening it into a hash join reading the whole table: 23 µs per step at 1M rows, against a
    # few µs), keeping only the rows the step would lower (most steps come after the first action).
    account_match = f" AND i.account_id = n.{q(names.step_account)}" if names.step_account else ""
    created = f"n.{q(names.step_created_at)}"
    return f"""
    UPDATE {table} AS target SET first_action_at = earliest.at
    FROM (SELECT i.handoff_id, min(i.at) AS at
          FROM {steps} AS n CROSS JOIN LATERAL (
               SELECT i.handoff_id, {created} AS at FROM {table} AS i
               WHERE i.session_id = n.{q(names.step_session)}{account_match} AND i.claimed_at < {created}
                 AND (i.first_action_at IS NULL OR i.first_action_at > {created}) OFFSET 0) AS i
          GROUP BY i.handoff_id) AS earliest
    WHERE target.handoff_id = earliest.handoff_id
      AND (target.first_action_at IS NULL OR target.first_action_at > earliest.at);"""


def _step_columns(names):
    """The step columns the first action depends on (a step's other columns never matter), as a SQL list."""
    return ", ".join(q(column) for column in _step_column_names(names))


def _probe_again(names, steps, table):
    """SQL probing again the handoffs whose first action was one of ``steps`` (a relation)."""
    account_match = f" AND o.{q(names.step_account)} = i.account_id" if names.step_account else ""
    probe = _probe(names, session="i.session_id", account="i.account_id", claimed_at="i.claimed_at")
    return f"""
    UPDATE {table} AS i SET first_action_at = {probe}
    FROM (SELECT DISTINCT {_step_columns(names)} FROM {steps} AS d) AS o
    WHERE o.{q(names.step_session)} = i.session_id{account_match}
      AND o.{q(names.step_created_at)} = i.first_action_at;"""


def _take(bucket, *, shared=False):
    """PL/pgSQL taking the advisory lock of ``bucket`` (none when NULL), every name qualified.

    An assignment of a plain expression: PL/pgSQL evaluates it without starting
    an executor (a ``PERFORM`` would run a query).
    """
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return f"lock_taken := pg_catalog.{function}({LOCK_CLASS}, {bucket})::pg_catalog.text;"


def _lock(session, *, shared=False):
    """PL/pgSQL taking the lock of one session's bucket: exclusive, or shared (a step insert's)."""
    return _take(_bucket(session), shared=shared)


def _lock_two(first, second):
    """PL/pgSQL taking the advisory locks of two sessions' buckets (either may be NULL), lower bucket first.

    Plain expressions (no FROM, no sort): PL/pgSQL evaluates them without starting an executor.
    """
    low = f"least({_bucket(first)}, {_bucket(second)})"
    high = f"greatest({_bucket(first)}, {_bucket(second)})"
    return (f"IF {first} IS NOT DISTINCT FROM {second} THEN {_lock(first)} "
            f"ELSE {_take(low)} IF {low} <> {high} THEN {_take(high)} END IF; END IF;")


def _count_into_lock(names, prefix, relation):
    """PL/pgSQL, one statement: the number of rows of ``relation`` into ``rows_written``, the first row's
    values into ``<prefix>_0..2`` and, when it is the only row, its session's lock taken.

    One statement instead of three (count, values, lock): each costs an executor start. The
    window count is read before the first row comes out, so the lock (in a lazy CASE) is taken
    only for a single row; the statements that follow take their snapshot after it.
    """
    columns = _step_column_names(names)
    values = ", ".join(f"r.{q(column)}" for column in columns)
    targets = ", ".join(_step_variables(names, prefix))
    lock = f"pg_advisory_xact_lock({LOCK_CLASS}, {_bucket('r.' + q(names.step_session))})"
    return (f"SELECT {values}, count(*) OVER (), CASE WHEN count(*) OVER () = 1 THEN {lock}::text END "
            f"INTO {targets}, rows_written, lock_taken FROM {relation} AS r LIMIT 1;")


def _function(name, body, declare="", *, cross_account=True, search_path=True):
    """A trigger function: SECURITY DEFINER (the writer of a step need not be able to write this table).

    The table's :data:`TRIGGER_POLICY` lets its owner's triggers through. The functions that
    probe the steps (``cross_account``) switch the owner's cross-account mode on for their
    statements and back to what it was before they return (an error rolls the change back
    with the transaction): a ``SET`` clause would do the same, but PostgreSQL lets only a
    superuser give a function a ``SET`` of a parameter it does not know (a placeholder such as
    this one), and it costs a few µs per call more. A step insert's function needs neither.

    Tables are always named with their schema (:func:`install` reads it): an unqualified
    name would be looked up in the writer's temporary schema first, where a table of the
    writer's own, with triggers of its own, would then run as the owner.
    ``search_path``: the function runs with ``search_path = pg_catalog, pg_temp`` (functions,
    operators and types from ``pg_catalog``; the temporary schema last, as PostgreSQL
    advises for ``SECURITY DEFINER``). Without it (the step insert's, the hot path: the
    clause costs some 5 µs per call), every function, type and operator in the body must be
    schema-qualified too (``OPERATOR(pg_catalog.=)``).
    """
    if cross_account:
        setting = _literal(rls.CROSS_ACCOUNT_SETTING)
        declare = f"cross_before text; cross_now text; {declare}"
        body = (f"cross_before := coalesce(pg_catalog.current_setting({setting}, true), '');\n"
                f"cross_now := pg_catalog.set_config({setting}, 'on', true);\n"
                f"<<work>>\nBEGIN\n{body.replace('RETURN NULL;', 'EXIT work;')}\nEND;\n"
                f"cross_now := pg_catalog.set_config({setting}, cross_before, true);")
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql VOLATILE SECURITY DEFINER
{"SET search_path = pg_catalog, pg_temp " if search_path else ""}AS $fn$
{('DECLARE ' + declare) if declare else ''}
BEGIN
{body}
RETURN NULL;
END
$fn$"""


def _literal(sql):
    return "'" + sql.replace("'", "''") + "'"


def _one_step(names, prefix):
    """PL/pgSQL: the variables of one step row, its session, instant (and account)."""
    return " ".join(f"{prefix}_{i} {q(names.step)}.{q(column)}%TYPE;"
                    for i, column in enumerate(_step_column_names(names)))


def _apply_step(names, table, step):
    """Static SQL, every name qualified: one new step lowers the first actions it comes first after.

    ``step``: the PL/pgSQL expressions of its session, instant (and account): the
    ``NEW`` row's columns, or variables. ``table``: this table's schema-qualified name.
    """
    session, created, *account = step
    account_match = f" AND account_id {_op('=')} {account[0]}" if account else ""
    return (f"UPDATE {table} SET first_action_at = {created} "
            f"WHERE session_id {_op('=')} {session}{account_match} AND claimed_at {_op('<')} {created} "
            f"AND (first_action_at IS NULL OR first_action_at {_op('>')} {created});")


def _step_variables(names, prefix):
    """The PL/pgSQL variables :func:`_one_step` declares, in :func:`_step_column_names`' order."""
    return [f"{prefix}_{i}" for i in range(len(_step_column_names(names)))]


def _single_probe_again(names, prefix, table):
    """Static SQL: the handoffs whose first action was one step (variables ``<prefix>_0..2``) are probed again."""
    account = f" AND i.account_id = {prefix}_2" if names.step_account else ""
    probe = _probe(names, session="i.session_id", account="i.account_id", claimed_at="i.claimed_at")
    return (f"UPDATE {table} AS i SET first_action_at = {probe} WHERE i.session_id = {prefix}_0{account} "
            f"AND i.first_action_at = {prefix}_1;")


def _into(names, prefix, relation):
    return f"SELECT {_step_columns(names)} INTO {', '.join(_step_variables(names, prefix))} FROM {relation};"


def trigger_functions(names, index_table=TABLE):
    """``{function name: CREATE FUNCTION statement}`` for the tables of ``names``.

    A step insert's trigger is per row (one lock, one index probe; the fewest
    statements for the single-row inserts that dominate). For updates and deletes
    of steps, a statement writing one step runs static SQL over its values (plans cached
    once, index lookups); one writing several runs its SQL through EXECUTE,
    planned for that statement's number of rows: a cached plan made for a bulk
    insert (hash joins over the whole table) would be ruinous for single rows,
    and the reverse for bulk. ``index_table``: this table's name as the functions
    name it (schema-qualified by :func:`install`).
    """
    t = index_table
    session = q(names.step_session)
    h = names
    claimed_probe = _probe(names, session=f"NEW.{q(h.handoff_session)}", account=f"NEW.{q(h.handoff_account)}",
                           claimed_at=f"NEW.{q(h.handoff_claimed_at)}")
    step_columns = _step_columns(names)
    moved_from = f"(SELECT {step_columns} FROM old_steps EXCEPT SELECT {step_columns} FROM new_steps)"
    moved_to = f"(SELECT {step_columns} FROM new_steps EXCEPT SELECT {step_columns} FROM old_steps)"
    changed = " OR ".join(f"{old} IS DISTINCT FROM {new}"
                          for old, new in zip(_step_variables(names, 'o'), _step_variables(names, 'n')))
    return {
        # Per row: the step's shared lock (steps inserted side by side never wait for each other;
        # their updates of one index row are ordered by its row lock), then one index probe.
        f"{PREFIX}_step_insert": _function(f"{PREFIX}_step_insert", f"""
{_lock(f"NEW.{session}", shared=True)}
{_apply_step(names, t, [f"NEW.{q(column)}" for column in _step_column_names(names)])}""",
            declare="lock_taken pg_catalog.text;", cross_account=False, search_path=False),
        f"{PREFIX}_step_update": _function(f"{PREFIX}_step_update", f"""
SELECT count(*) INTO rows_written FROM old_steps;
IF rows_written = 1 THEN
  {_into(names, 'o', 'old_steps')}
  {_into(names, 'n', 'new_steps')}
  IF NOT ({changed}) THEN
    RETURN NULL;
  END IF;
  {_lock_two('o_0', 'n_0')}
  {_single_probe_again(names, 'o', t)}
  {_apply_step(names, t, _step_variables(names, 'n'))}
ELSIF rows_written > 1 THEN
  -- Only the steps whose instant, session or account changed (set difference both ways).
  IF NOT EXISTS {moved_from} AND NOT EXISTS {moved_to} THEN
    RETURN NULL;
  END IF;
  {_lock_sessions(f"SELECT {session} FROM {moved_from} AS o UNION ALL SELECT {session} FROM {moved_to} AS n")}
  EXECUTE {_literal(_probe_again(names, moved_from, t).strip().rstrip(";"))};
  EXECUTE {_literal(_apply_new_steps(names, moved_to, t).strip().rstrip(";"))};
END IF;""", declare=f"rows_written bigint; lock_taken text; {_one_step(names, 'o')} {_one_step(names, 'n')}"),
        f"{PREFIX}_step_delete": _function(f"{PREFIX}_step_delete", f"""
{_count_into_lock(names, 'o', 'old_steps')}
IF rows_written = 1 THEN
  IF o_0 IS NOT NULL THEN
    {_single_probe_again(names, 'o', t)}
  END IF;
ELSIF rows_written > 1 THEN
  {_lock_sessions(f"SELECT {session} FROM old_steps")}
  EXECUTE {_literal(_probe_again(names, "old_steps", t).strip().rstrip(";"))};
END IF;""", declare=f"rows_written bigint; lock_taken text; {_one_step(names, 'o')}"),
        f"{PREFIX}_step_truncate": _function(
            f"{PREFIX}_step_truncate", f"UPDATE {t} SET first_action_at = NULL;"
        ),
        f"{PREFIX}_handoff_write": _function(f"{PREFIX}_handoff_write", f"""
IF TG_OP = 'UPDATE' THEN
  {_lock_two(f"OLD.{q(h.handoff_session)}", f"NEW.{q(h.handoff_session)}")}
  IF OLD.{q(h.handoff_pk)} IS DISTINCT FROM NEW.{q(h.handoff_pk)} THEN
    DELETE FROM {t} WHERE handoff_id = OLD.{q(h.handoff_pk)};
  END IF;
ELSIF TG_OP = 'INSERT' THEN
  {_lock(f"NEW.{q(h.handoff_session)}")}
ELSE
  {_lock(f"OLD.{q(h.handoff_session)}")}
  DELETE FROM {t} WHERE handoff_id = OLD.{q(h.handoff_pk)};
  RETURN NULL;
END IF;
IF NEW.{q(h.handoff_claimed_at)} IS NULL THEN
  DELETE FROM {t} WHERE handoff_id = NEW.{q(h.handoff_pk)};
  RETURN NULL;
END IF;
IF TG_OP = 'UPDATE' AND OLD.{q(h.handoff_claimed_at)} IS NOT NULL
   AND OLD.{q(h.handoff_pk)} IS NOT DISTINCT FROM NEW.{q(h.handoff_pk)} THEN
  -- A re-claim (or a claimed handoff's session or claimer changed): its row is there.
  UPDATE {t} SET account_id = NEW.{q(h.handoff_account)}, session_id = NEW.{q(h.handoff_session)},
    claimed_at = NEW.{q(h.handoff_claimed_at)}, claimed_by_id = NEW.{q(h.handoff_claimed_by)},
    first_action_at = {claimed_probe}
  WHERE handoff_id = NEW.{q(h.handoff_pk)};
  IF FOUND THEN
    RETURN NULL;
  END IF;
END IF;
INSERT INTO {t} (handoff_id, account_id, session_id, claimed_at, claimed_by_id, first_action_at)
VALUES (NEW.{q(h.handoff_pk)}, NEW.{q(h.handoff_account)}, NEW.{q(h.handoff_session)},
        NEW.{q(h.handoff_claimed_at)}, NEW.{q(h.handoff_claimed_by)}, {claimed_probe})
ON CONFLICT (handoff_id) DO UPDATE SET account_id = EXCLUDED.account_id, session_id = EXCLUDED.session_id,
  claimed_at = EXCLUDED.claimed_at, claimed_by_id = EXCLUDED.claimed_by_id,
  first_action_at = EXCLUDED.first_action_at;""", declare="lock_taken text;"),
        f"{PREFIX}_handoff_truncate": _function(f"{PREFIX}_handoff_truncate", f"DELETE FROM {t};"),
    }


def trigger_statements(names):
    """``[(trigger name, table, CREATE TRIGGER statement)]`` for the tables of ``names``."""
    h, step, handoff = names, q(names.step), q(names.handoff)
    columns = [h.handoff_pk, h.handoff_account, h.handoff_session, h.handoff_claimed_at, h.handoff_claimed_by]
    changed = " OR ".join(f"OLD.{q(column)} IS DISTINCT FROM NEW.{q(column)}" for column in columns)
    of_columns = ", ".join(q(column) for column in columns)
    return [
        (f"{PREFIX}_step_insert", names.step,
         f"CREATE TRIGGER {PREFIX}_step_insert AFTER INSERT ON {step} "
         f"FOR EACH ROW EXECUTE FUNCTION {PREFIX}_step_insert()"),
        # Transition tables allow no column list: the function finds nothing to do when
        # neither the instant, the session nor the account changed.
        (f"{PREFIX}_step_update", names.step,
         f"CREATE TRIGGER {PREFIX}_step_update AFTER UPDATE ON {step} REFERENCING OLD TABLE AS old_steps "
         f"NEW TABLE AS new_steps FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}_step_update()"),
        (f"{PREFIX}_step_delete", names.step,
         f"CREATE TRIGGER {PREFIX}_step_delete AFTER DELETE ON {step} REFERENCING OLD TABLE AS old_steps "
         f"FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}_step_delete()"),
        (f"{PREFIX}_step_truncate", names.step,
         f"CREATE TRIGGER {PREFIX}_step_truncate AFTER TRUNCATE ON {step} "
         f"FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}_step_truncate()"),
        (f"{PREFIX}_handoff_insert", names.handoff,
         f"CREATE TRIGGER {PREFIX}_handoff_insert AFTER INSERT ON {handoff} FOR EACH ROW "
         f"WHEN (NEW.{q(h.handoff_claimed_at)} IS NOT NULL) EXECUTE FUNCTION {PREFIX}_handoff_write()"),
        (f"{PREFIX}_handoff_update", names.handoff,
         f"CREATE TRIGGER {PREFIX}_handoff_update AFTER UPDATE OF {of_columns} ON {handoff} FOR EACH ROW "
         f"WHEN ({changed}) EXECUTE FUNCTION {PREFIX}_handoff_write()"),
        (f"{PREFIX}_handoff_delete", names.handoff,
         f"CREATE TRIGGER {PREFIX}_handoff_delete AFTER DELETE ON {handoff} FOR EACH ROW "
         f"WHEN (OLD.{q(h.handoff_claimed_at)} IS NOT NULL) EXECUTE FUNCTION {PREFIX}_handoff_write()"),
        (f"{PREFIX}_handoff_truncate", names.handoff,
         f"CREATE TRIGGER {PREFIX}_handoff_truncate AFTER TRUNCATE ON {handoff} "
         f"FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}_handoff_truncate()"),
    ]


TRIGGER_COUNT = 8
# A trigger missing: writes may have been missed, so the rows are not kept by `install`.
TRIGGERS_MISSING = "some of its triggers are missing (manage.py first_action_index install)"


# --- State ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What the database says of the index: ``ready``, else ``reason`` (why reads probe)."""

    ready: bool
    reason: str
    installed_for: str = ""


_cache = {}


def clear_cache(**kwargs):
    _cache.clear()


# A changed FLOWPILOT_ANALYTICS (override_settings in tests) forgets what was read.
setting_changed.connect(clear_cache)


def _state_row(cursor):
    cursor.execute(f"SELECT to_regclass('{STATE_TABLE}') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute(f"SELECT installed_for, backfilled_at FROM {STATE_TABLE} ORDER BY id LIMIT 1")
    return cursor.fetchone()


def read_state(connection):
    """The index's :class:`State` on ``connection`` (two or three cheap statements)."""
    if connection.vendor != "postgresql":
        return State(False, f"database {connection.alias!r} is not PostgreSQL: reads probe the steps")
    with connection.cursor() as cursor:
        row = _state_row(cursor)
        if row is None or not row[0]:
            return State(False, "its triggers are not installed (manage.py first_action_index install)")
        installed_for, backfilled_at = row
        if installed_for != signature():
            return State(False, "its triggers were installed for other tables or columns than the models in use "
                                "(manage.py first_action_index install)", installed_for)
        names = Names.from_signature(installed_for)
        cursor.execute(
            "SELECT count(*), EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polname = %s "
            "AND polrelid = to_regclass(%s)) FROM pg_catalog.pg_trigger "
            "WHERE NOT tgisinternal AND tgname LIKE %s AND tgrelid IN (to_regclass(%s), to_regclass(%s))",
            [TRIGGER_POLICY, TABLE, f"{PREFIX}%", q(names.step), q(names.handoff)],
        )
        triggers, policy = cursor.fetchone()
        if triggers != TRIGGER_COUNT:
            return State(False, TRIGGERS_MISSING, installed_for)
        if not policy:
            # Installed by an earlier version: every write was kept (its functions did not need it).
            return State(False, "its triggers' policy on the table is missing (manage.py first_action_index "
                                "install)", installed_for)
        if backfilled_at is None:
            return State(False, "it is not backfilled (manage.py first_action_index backfill)", installed_for)
    return State(True, "ready", installed_for)


def is_on():
    return app_settings.FIRST_ACTION_INDEX is True


def read_alias():
    from .models import FirstActionIndex

    return router.db_for_read(FirstActionIndex) or "default"


def is_ready(alias=None):
    """Whether the figures read the table on ``alias``: the setting on and the index ready (cached a few seconds)."""
    if not is_on():
        return False
    alias = alias or read_alias()
    cached = _cache.get(alias)
    now = time.monotonic()
    if cached is None or cached[0] < now:
        connection = connections[alias]
        ready = connection.vendor == "postgresql" and read_state(connection).ready
        cached = _cache[alias] = (now + STATE_TTL, ready)
    return cached[1]


# --- The source of first_action_at: the one swappable expression --------------------------


def probed_handoffs():
    """Every handoff in use under the metric's names, ``first_action_at`` probed (the definition)."""
    from .selectors import first_action_subquery

    return all_handoffs().annotate(first_action_at=first_action_subquery())


def stored_handoffs():
    """Every claimed handoff under the metric's names, ``first_action_at`` as the index stores it."""
    from .models import FirstActionIndex

    return FirstActionIndex._default_manager.all()


def handoffs_with_first_action():
    """The handoffs every figure reads, with ``first_action_at``: stored when the index is ready, else probed.

    Both expose ``id``, ``account_id``, ``session_id``, ``claimed_at``,
    ``claimed_by_id`` and ``first_action_at``; a clock's lag reads the last two.
    """
    return stored_handoffs() if is_ready() else probed_handoffs()


# --- Install, remove, backfill, verify ----------------------------------------------------


def _cross_account(using):
    """Lets the rest of the transaction on ``using`` write and read every account (as the tables' owner)."""
    rls.set_local([using], rls.with_host_settings({rls.CROSS_ACCOUNT_SETTING: rls.ON}))


def _drop(cursor, names):
    for name, table, _ in trigger_statements(names):
        cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {q(table)}")
    for function in trigger_functions(names):
        cursor.execute(f"DROP FUNCTION IF EXISTS {function}()")


def _write_state(cursor, *, installed_for, installed, backfilled):
    cursor.execute(f"DELETE FROM {STATE_TABLE}")
    cursor.execute(
        f"INSERT INTO {STATE_TABLE} (installed_for, installed_at, backfilled_at) VALUES (%s, %s, %s)",
        [installed_for, timezone.now() if installed else None, timezone.now() if backfilled else None],
    )


def install(*, using="default"):
    """Creates (or re-creates) the triggers on the tables in use; ``True`` when the rows must be backfilled.

    Re-installing for the same tables keeps the rows and the backfill (the
    triggers stayed in place); for other tables, or after ``remove``, the rows
    are emptied: only a backfill after the triggers exist makes them exact.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotPostgreSQL(using)
    wanted = signature()
    with transaction.atomic(using=using), connection.cursor() as cursor:
        wanted_names = Names.from_signature(wanted)
        # The writers of steps and handoffs first (they wait for us, we never for them while
        # holding this table: their triggers write it).
        cursor.execute(f"LOCK TABLE {q(wanted_names.step)}, {q(wanted_names.handoff)} IN SHARE ROW EXCLUSIVE MODE")
        _cross_account(using)
        row = _state_row(cursor)
        previous = row[0] if row else ""
        kept = previous == wanted and read_state(connection).reason != TRIGGERS_MISSING
        if previous:
            _drop(cursor, Names.from_signature(previous))
        names = wanted_names
        # The functions name every table with its schema.
        qualified = dataclasses.replace(names, step=_with_schema(cursor, names.step),
                                        handoff=_with_schema(cursor, names.handoff))
        for function, statement in trigger_functions(qualified, q(_with_schema(cursor, TABLE))).items():
            cursor.execute(statement)
            # Only the owner may attach them to a table (EXECUTE is checked at CREATE TRIGGER):
            # on a table of its own, a writer could make them rewrite any account's rows.
            cursor.execute(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")
        for _, _, statement in trigger_statements(names):
            cursor.execute(statement)
        for statement in trigger_policy_statements():
            cursor.execute(statement)
        backfilled = kept and row[1] is not None
        if not kept:
            cursor.execute(f"DELETE FROM {TABLE}")
        _write_state(cursor, installed_for=wanted, installed=True, backfilled=backfilled)
    clear_cache()
    return not backfilled


def _with_schema(cursor, table):
    """``schema.table`` of ``table`` (as the current ``search_path`` finds it), each part unquoted."""
    cursor.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                   "ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s)", [q(table)])
    row = cursor.fetchone()
    if row is None:
        raise NotInstalled(f"table {table!r} not found")
    return f"{row[0]}.{row[1]}"


def remove(*, using="default"):
    """Drops the triggers and empties the table: reads probe again."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotPostgreSQL(using)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        _cross_account(using)
        row = _state_row(cursor)
        if row and row[0]:
            _drop(cursor, Names.from_signature(row[0]))
        _drop(cursor, Names.from_signature(signature()))
        cursor.execute(trigger_policy_statements()[0])
        cursor.execute(f"DELETE FROM {TABLE}")
        _write_state(cursor, installed_for="", installed=False, backfilled=False)
    clear_cache()


class NotPostgreSQL(Exception):
    def __init__(self, alias):
        super().__init__(f"database {alias!r} is not PostgreSQL: the first-action index needs PostgreSQL")


class NotInstalled(Exception):
    pass


def backfill(*, using="default", batch_size=BACKFILL_BATCH, progress=None, vacuum=True):
    """Writes every claimed handoff's row, ``batch_size`` handoffs per transaction; returns how many were written.

    The triggers must be installed first (they keep every row written from then
    on). Each batch locks its handoff rows (``FOR SHARE``) and their sessions'
    advisory locks, then probes with a fresh snapshot and inserts the rows not
    yet there (a row present was written by a trigger, exact): a batch never
    holds its locks longer than one batch's statements.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotPostgreSQL(using)
    state = read_state(connection)
    if not state.installed_for or state.installed_for != signature():
        raise NotInstalled("the triggers are not installed for the models in use: run install first")
    names = Names.from_signature(state.installed_for)
    h = names
    handoff, pk = q(h.handoff), q(h.handoff_pk)
    probe = _probe(names, session=f"h.{q(h.handoff_session)}", account=f"h.{q(h.handoff_account)}",
                   claimed_at=f"h.{q(h.handoff_claimed_at)}")
    written, last = 0, None
    while True:
        for attempt in range(3):
            try:
                with transaction.atomic(using=using), connection.cursor() as cursor:
                    _cross_account(using)
                    after = "" if last is None else f"AND {pk} > %s"
                    cursor.execute(
                        f"SELECT {pk}, {q(h.handoff_session)} FROM {handoff} "
                        f"WHERE {q(h.handoff_claimed_at)} IS NOT NULL {after} ORDER BY {pk} LIMIT %s FOR SHARE",
                        [*([] if last is None else [last]), batch_size],
                    )
                    rows = cursor.fetchall()
                    if not rows:
                        break
                    sessions = sorted({session for _, session in rows if session is not None})
                    cursor.execute(
                        f"SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, b)) FROM (SELECT DISTINCT "
                        f"{_bucket('s')} AS b FROM unnest(%s::bigint[]) AS s ORDER BY 1) AS ordered",
                        [sessions],
                    )
                    cursor.execute(
                        f"INSERT INTO {TABLE} (handoff_id, account_id, session_id, claimed_at, claimed_by_id, "
                        f"first_action_at) SELECT h.{pk}, h.{q(h.handoff_account)}, h.{q(h.handoff_session)}, "
                        f"h.{q(h.handoff_claimed_at)}, h.{q(h.handoff_claimed_by)}, {probe} FROM {handoff} h "
                        f"WHERE h.{pk} = ANY(%s) AND h.{q(h.handoff_claimed_at)} IS NOT NULL "
                        "ON CONFLICT (handoff_id) DO NOTHING",
                        [[row[0] for row in rows]],
                    )
                    written += cursor.rowcount
                    last = rows[-1][0]
                break
            except OperationalError:
                # A deadlock with a writer touching the same sessions: the batch is retried.
                if attempt == 2:
                    raise
        if not rows:
            break
        if progress:
            progress(written, last)
    mark_backfilled(using=using)
    if vacuum and not connection.in_atomic_block:
        # Index-only scans need the visibility map of the freshly written pages.
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
    clear_cache()
    return written


def mark_backfilled(*, using="default"):
    """Records the backfill as done without running it (the migration, when no handoff is claimed yet)."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(f"UPDATE {STATE_TABLE} SET backfilled_at = %s", [timezone.now()])
    clear_cache()


@dataclass(frozen=True)
class Difference:
    """A handoff on which the table and the probe disagree: each side's row, ``None`` when absent."""

    handoff_id: int
    stored: dict | None
    probed: dict | None

    def describe(self):
        if self.stored is None:
            return f"handoff {self.handoff_id}: missing from the index (probe: {_row_text(self.probed)})"
        if self.probed is None:
            return f"handoff {self.handoff_id}: in the index ({_row_text(self.stored)}) but not claimed"
        changed = [key for key in COMPARED if self.stored[key] != self.probed[key]]
        return f"handoff {self.handoff_id}: " + "; ".join(
            f"{key} stored {self.stored[key]!s} != probed {self.probed[key]!s}" for key in changed)


COMPARED = ("account_id", "session_id", "claimed_at", "claimed_by_id", "first_action_at")


def _row_text(row):
    return ", ".join(f"{key}={row[key]!s}" for key in COMPARED)


def verify(*, using="default", start=None, end=None):
    """Every :class:`Difference` between the table and the probe for the handoffs claimed in ``[start, end]``.

    One statement (one snapshot): the probe (the definition, the ORM's own
    correlated subquery) joined in full with the stored rows of the window.
    """
    from .models import FirstActionIndex

    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotPostgreSQL(using)
    bounds = {}
    if start is not None:
        bounds["claimed_at__gte"] = start
    if end is not None:
        bounds["claimed_at__lte"] = end
    probed = probed_handoffs().filter(claimed_at__isnull=False, **bounds).values("id", *COMPARED)
    stored = FirstActionIndex._default_manager.using(using).filter(**bounds).values("id", *COMPARED)
    probed_sql, probed_params = probed.query.get_compiler(using=using).as_sql()
    stored_sql, stored_params = stored.query.get_compiler(using=using).as_sql()
    columns = ", ".join(f"p.{key}, s.{key}" for key in COMPARED)
    differs = " OR ".join(f"p.{key} IS DISTINCT FROM s.{key}" for key in COMPARED)
    sql = (f"SELECT p.id, s.id, {columns} FROM ({probed_sql}) AS p FULL JOIN ({stored_sql}) AS s ON p.id = s.id "
           f"WHERE p.id IS NULL OR s.id IS NULL OR {differs} ORDER BY coalesce(p.id, s.id)")
    differences = []
    with transaction.atomic(using=using), connection.cursor() as cursor:
        _cross_account(using)
        cursor.execute(sql, [*probed_params, *stored_params])
        for row in cursor.fetchall():
            probed_id, stored_id, *values = row
            probed_row = dict(zip(COMPARED, values[0::2])) if probed_id is not None else None
            stored_row = dict(zip(COMPARED, values[1::2])) if stored_id is not None else None
            differences.append(Difference(probed_id or stored_id, stored_row, probed_row))
    return differences


def first_action_of(handoff_id):
    """The stored first action of one handoff (tests, the admin): ``None`` without a row or an action."""
    from .models import FirstActionIndex

    return FirstActionIndex._default_manager.filter(pk=handoff_id).values_list("first_action_at", flat=True).first()

