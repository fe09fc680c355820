"""
The metric's PostgreSQL statement: every figure of every group at once.

:func:`aggregate_in_sql` runs it (through
:func:`flowpilot_analytics.aggregation.aggregate` on PostgreSQL);
:func:`statement` gives its text and parameters (for EXPLAIN and the benchmark).
Nothing here names a column of the app's tables: the handoffs and their
first-action probe are the ORM's queryset, compiled, exposing the named columns
``claimed_at``, ``first_action_at`` (and ``group_key``); the lag is the
context's clock's expression over them; the aggregates are the spec's
(:data:`~flowpilot_analytics.figures.FIGURES`), each selected under its figure's
name and read back by name::

    SELECT group_key, <each figure's aggregate> AS <its name>
    FROM (SELECT <key> AS group_key, claimed_at, <the clock's lag> AS lag_us
          FROM (<the handoffs queryset>) AS handoffs <the clock's periods, if any>
          OFFSET 0) AS lags
    GROUP BY group_key

Per account, that block is a ``LATERAL`` subquery run for each requested
account: the handoffs come from an index-only scan of ``(account, claimed_at)``
with the account fixed, so no sort by account is needed before the percentiles,
and an account without handoffs still gets its row (no ``GROUP BY`` there).

Traps avoided (docs/scaling.md, "The statement"; timings in docs/benchmarks.md):

* The handoffs subquery has the correlated first-action probe in its SELECT
  list. Without a fence PostgreSQL would flatten it into the aggregates and run
  the probe once per reference to the lag (count, sum, percentiles...).
  ``OFFSET 0`` keeps it a subquery, so the probe runs once per handoff, streamed
  (a MATERIALIZED CTE would also fence it, but spills every row to a tuplestore
  first).
* ``sum()`` of bigint is an exact numeric. The percentiles are one
  ``percentile_cont`` over the array of their fractions: one sort, read once
  (separate ``percentile_cont`` calls share their sort too, but materialise it
  for rescans: 3% slower on 600k handoffs, where the sort spills to disk).
"""

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import BigIntegerField, F
from django.db.models.expressions import RawSQL

from .figures import FIGURES, figures_from_aggregates

# The inputs of a handoff, named columns of the handoffs query (the Python path reads them too).
HANDOFF_COLUMNS = ("claimed_at", "first_action_at")
GROUP_KEY = "group_key"
# The alias of the requested accounts, when grouping by account.
REQUESTED = "requested"
PERCENTILES = tuple(figure for figure in FIGURES if figure.percentile is not None)
PERCENTILES_COLUMN = "percentiles"


def select_list(context):
    """Each figure's aggregate under the figure's name, the percentiles in one array: ``(sql, params)``."""
    parts, params = [], []
    for figure in FIGURES:
        if figure.sql is not None:
            parts.append(f'{figure.sql} AS "{figure.name}"')
            params += [getattr(context, name) for name in figure.sql_params]
    fractions = ", ".join(str(figure.percentile) for figure in PERCENTILES)
    percentiles = f"percentile_cont(ARRAY[{fractions}]::float8[]) WITHIN GROUP (ORDER BY lag_us)"
    parts.append(f'{percentiles} AS "{PERCENTILES_COLUMN}"')
    return ",\n    ".join(parts), params


def aggregates_of(row):
    """Each figure's aggregate from a row of the statement, read by column name."""
    percentiles = row.pop(PERCENTILES_COLUMN) or [None] * len(PERCENTILES)
    return row | {figure.name: value for figure, value in zip(PERCENTILES, percentiles)}


def stored_lag_column(handoffs, clock):
    """The column of ``handoffs``' model holding ``clock``'s lag already computed, or ``None``.

    Only a column generated from that very expression (:class:`~flowpilot_analytics.models.CalendarLag`)
    counts: a host's handoff model may have a field of the same name meaning something else.
    """
    from .models import CalendarLag

    name = getattr(clock, "stored_lag", None)
    field = next((field for field in handoffs.model._meta.concrete_fields if field.name == name), None)
    return name if isinstance(getattr(field, "expression", None), CalendarLag) else None


def statement(handoffs, *, grouping, context, connection):
    """The one statement computing the figures of ``handoffs`` per group: ``(sql, params)``."""
    if grouping.accounts is not None:
        handoffs = handoffs.filter(
            account_id=RawSQL(f"{REQUESTED}.account_id", (), output_field=BigIntegerField())
        )
    key_column = {GROUP_KEY: F(grouping.field)} if grouping.field is not None else {}
    # The clock's lag as the source stores it (the first-action index's lag_us), else computed.
    stored_lag = stored_lag_column(handoffs, context.clock)
    columns = (*HANDOFF_COLUMNS, stored_lag) if stored_lag else HANDOFF_COLUMNS
    handoffs_sql, handoffs_params = (
        handoffs.values(*columns, **key_column).query.get_compiler(connection=connection).as_sql()
    )
    if grouping.bucket_edges is not None:
        # width_bucket counts the edges <= claimed_at: bisect_right, as in Python.
        key_sql, key_params = "width_bucket(claimed_at, %s::timestamptz[]) - 1", [list(grouping.bucket_edges)]
    elif grouping.field is not None:
        key_sql, key_params = GROUP_KEY, []
    else:
        key_sql, key_params = "NULL::integer", []
    lag_sql, lag_params = (stored_lag, []) if stored_lag else context.clock.lag_sql()
    # What the clock's lag reads besides the handoff (the business clock's open periods).
    periods_sql, periods_params = context.clock.periods_sql(
        f"{REQUESTED}.account_id" if grouping.accounts is not None else None
    )
    aggregates_sql, aggregates_params = select_list(context)
    if periods_sql:
        # A clock reading first_action_at more than once (the business clock) needs the
        # handoffs fenced too: flattened, each reference would run the probe again.
        handoffs_sql = f"SELECT * FROM ({handoffs_sql}) AS probed OFFSET 0"
    lags = f"""
        SELECT {key_sql} AS {GROUP_KEY}, claimed_at, {lag_sql} AS lag_us
        FROM ({handoffs_sql}) AS handoffs {periods_sql}
        OFFSET 0"""
    if grouping.accounts is not None and not grouping.within_accounts:
        # No GROUP BY: one row for the account, even without handoffs.
        per_group = f"SELECT NULL AS {GROUP_KEY},\n    {aggregates_sql}\nFROM ({lags}\n) AS lags"
    else:
        per_group = (
            f"SELECT {GROUP_KEY},\n    {aggregates_sql}\nFROM ({lags}\n) AS lags\nGROUP BY {GROUP_KEY}"
        )
    params = [*aggregates_params, *key_params, *lag_params, *handoffs_params, *periods_params]
    if grouping.accounts is None:
        return per_group, params
    per_account = (
        f"SELECT {REQUESTED}.account_id, figures.*\n"
        f"FROM unnest(%s::bigint[]) AS {REQUESTED} (account_id)\n"
        f"CROSS JOIN LATERAL ({per_group}\n) AS figures"
    )
    return per_account, [list(grouping.accounts), *params]


def aggregate_in_sql(handoffs, *, grouping, context, connection=None):
    """Runs :func:`statement` on the handoffs' database: ``{group key: Figures}``."""
    connection = connection or connections[handoffs.db]
    try:
        sql, params = statement(handoffs, grouping=grouping, context=context, connection=connection)
    except EmptyResultSet:
        # A filter no row can pass (an id beyond its column's range, say): no handoffs, no query.
        from .aggregation import aggregate_in_python

        return aggregate_in_python(handoffs.none(), grouping=grouping, context=context)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    figures = {}
    for row in rows:
        key = grouping.key(row.get("account_id"), row[GROUP_KEY])
        figures[key] = figures_from_aggregates(aggregates_of(row), context)
    return figures
