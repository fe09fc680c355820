"""
The indexes the metric needs on the tables in use, and which of them a database lacks.

The app's own tables get theirs from its migrations. A host's tables (its own
models, ``FLOWPILOT_ANALYTICS_*_MODEL``) are the host's to migrate: the app only
says what is missing, from the field map (:func:`missing_indexes`), in a system
check (``flowpilot_analytics.W007``, ``check --database``) and in
``manage.py metric_indexes``, which prints the statements (or runs them).

* **probe**: the first-action subquery finds, per handoff, the earliest step of
  its session after the claim: an index on the steps leading with
  ``(account, session, created_at)`` (the app's layout: an account's steps
  together) or ``(session, created_at)`` (enough, and the only one without an
  account column);
* **window**: the handoffs of one account claimed in a window: an index leading
  with ``(account, claimed_at)``, partial on claimed rows (or not partial), and
  on PostgreSQL carrying the session too (in its keys or ``INCLUDE``): without
  it every handoff costs a visit to the table for its session, and PostgreSQL
  prefers a bitmap scan of the account's key (3x slower across 100 accounts,
  docs/benchmarks-host-schema.md).

An index still being built, or left invalid by a failed ``CREATE INDEX
CONCURRENTLY``, does not count (PostgreSQL's ``indisvalid``).
"""

import re
from dataclasses import dataclass

from .field_map import metric_tables

# PostgreSQL: every index of a table, valid or not, its access method, key columns, included
# columns and predicate (an expression's column is NULL).
INDEXES_SQL = """
SELECT i.indexrelid::regclass::text, i.indisvalid, am.amname,
       ARRAY(SELECT a.attname
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.position <= i.indnkeyatts
             ORDER BY k.position),
       ARRAY(SELECT a.attname
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.position > i.indnkeyatts),
       pg_get_expr(i.indpred, i.indrelid)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE i.indrelid = to_regclass(%s)
"""
MAX_NAME = 63  # PostgreSQL's identifier length


@dataclass(frozen=True)
class ExistingIndex:
    name: str
    columns: tuple  # its key columns, in order
    included: tuple = ()
    valid: bool = True
    btree: bool = True
    predicate: str | None = None


@dataclass(frozen=True)
class MetricIndex:
    """An index the metric's queries need: on ``table``, leading with one of ``accepted`` column lists."""

    purpose: str  # "probe" or "window"
    table: str
    columns: tuple  # the layout to create
    accepted: tuple  # column lists an existing index may lead with
    include: tuple = ()
    # A column the index may be partial on, "<column> IS NOT NULL" (None: no predicate accepted).
    not_null: str | None = None
    # Columns an index must carry too (in its keys or INCLUDE) where the database can: PostgreSQL.
    covering: tuple = ()

    @property
    def name(self):
        return f"{self.table}_fp_{self.purpose}"[:MAX_NAME]

    def served_by(self, index, *, vendor="postgresql"):
        if not (index.valid and index.btree):
            return False
        if vendor == "postgresql" and not set(self.covering) <= {*index.columns, *index.included}:
            return False
        if index.predicate is not None and not (
            self.not_null and _normalised(index.predicate) == f"{self.not_null} is not null"
        ):
            return False
        return any(tuple(index.columns[: len(columns)]) == columns for columns in self.accepted)

    def statement(self, connection):
        """``CREATE INDEX`` for ``connection``'s database: ``CONCURRENTLY`` and ``INCLUDE`` on PostgreSQL."""
        quote = connection.ops.quote_name
        postgresql = connection.vendor == "postgresql"
        parts = [
            "CREATE INDEX" + (" CONCURRENTLY" if postgresql else ""),
            f"IF NOT EXISTS {quote(self.name)} ON {quote(self.table)}",
            f"({', '.join(map(quote, self.columns))})",
        ]
        if self.include and postgresql:
            parts.append(f"INCLUDE ({', '.join(map(quote, self.include))})")
        if self.not_null:
            parts.append(f"WHERE {quote(self.not_null)} IS NOT NULL")
        return " ".join(parts) + ";"


def _normalised(predicate):
    return re.sub(r"\s+", " ", predicate.replace('"', "").strip("() ")).lower()


def wanted_indexes():
    """The probe and window indexes of the tables in use (from the field map)."""
    tables = metric_tables()
    step, handoff = tables.step, tables.handoff
    probe_columns = (step.session, step.created_at)
    probe_layouts = ((step.account, *probe_columns), probe_columns) if step.account else (probe_columns,)
    return [
        MetricIndex("probe", step.name, columns=probe_layouts[0], accepted=probe_layouts),
        MetricIndex(
            "window", handoff.name, columns=(handoff.account, handoff.claimed_at),
            accepted=((handoff.account, handoff.claimed_at),), include=(handoff.session,),
            not_null=handoff.claimed_at, covering=(handoff.session,),
        ),
    ]


def existing_indexes(connection, table):
    """The indexes of ``table`` in ``connection``'s database."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(INDEXES_SQL, [table])
            return [
                ExistingIndex(name, tuple(columns), tuple(included), valid, method == "btree", predicate)
                for name, valid, method, columns, included, predicate in cursor.fetchall()
            ]
        constraints = connection.introspection.get_constraints(cursor, table)
    return [
        ExistingIndex(name, tuple(info["columns"]))
        for name, info in constraints.items()
        if info.get("index") or info.get("primary_key") or info.get("unique")
    ]


def missing_indexes(connection):
    """The :class:`MetricIndex` es no valid index of ``connection``'s database serves.

    A table not created yet (before ``migrate``) lacks nothing yet.
    """
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    missing = []
    for wanted in wanted_indexes():
        existing = existing_indexes(connection, wanted.table) if wanted.table in tables else None
        if existing is not None and not any(wanted.served_by(index, vendor=connection.vendor) for index in existing):
            missing.append(wanted)
    return missing
