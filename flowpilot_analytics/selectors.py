"""
Reads of the escalation metric: the one place it is computed.

The API, the admin widget and the report command all call these functions, so
they cannot disagree. The rules (CONTRACT.md, "The computation"):

* a handoff is in the window when ``start <= claimed_at <= end`` (a period
  ending now) or ``start <= claimed_at < end`` (a custom window, see
  :mod:`flowpilot_analytics.windows`); unclaimed handoffs never are;
* its first action is the earliest step of the same session (and the same
  account) created strictly after ``claimed_at``, found by one correlated
  subquery per handoff;
* the lag is floored at zero and the statistics are taken over the handoffs
  that have an action.

On PostgreSQL the statistics are aggregated in SQL (one statement, one row per
account, engineer or trend bucket) so that no per-handoff data crosses the wire; elsewhere (SQLite) the
lags are streamed into :mod:`flowpilot_analytics.stats`. Both start from whole
microseconds and round the same way, so they give identical figures.

The handoff rows are read from the database alias that the router gives the
activity tables (``FLOWPILOT_ANALYTICS_DB_ALIAS``: a read replica, if set).
Why the SQL looks the way it does, with measurements: docs/benchmarks.md.
"""

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import BigIntegerField, DurationField, ExpressionWrapper, F, OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .constants import METRIC_DEFINITION
from .models import Account, AiSessionStep, SessionHandoff
from .stats import (
    BUCKET_UPPER_EDGES_US,
    LAG_BUCKETS,
    MICROSECONDS_PER_SECOND,
    PERCENTILES,
    LagSummary,
    lag_microseconds,
    summarize_lags,
    to_seconds,
)
from .windows import Window, window_for_period


@dataclass(frozen=True)
class EscalationMetrics:
    """The figures of one account (or engineer, or trend bucket) over one window, as the API emits them."""

    period: str
    window_start: datetime
    window_end: datetime
    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds_to_first_action: float | None
    median_seconds_to_first_action: float | None
    p95_seconds_to_first_action: float | None
    metric_definition: str = METRIC_DEFINITION
    # Beyond the contract's seed schema (added fields, never replacing one).
    window_end_inclusive: bool = True
    time_zone: str = "UTC"
    p75_seconds_to_first_action: float | None = None
    p90_seconds_to_first_action: float | None = None
    max_seconds_to_first_action: float | None = None
    n_handoffs_without_action: int = 0
    action_rate: float | None = None
    oldest_waiting_seconds: float | None = None
    distribution: tuple = ()
    target_seconds: float | None = None
    n_handoffs_within_target: int | None = None
    within_target_rate: float | None = None

    @classmethod
    def from_summary(cls, summary, *, window, now, target_seconds=None):
        oldest = summary.oldest_waiting_claimed_at
        return cls(
            period=window.period or "custom",
            window_start=window.start,
            window_end=window.end,
            window_end_inclusive=window.closed,
            time_zone=window.time_zone,
            n_handoffs_claimed=summary.n_handoffs_claimed,
            n_handoffs_with_action=summary.n_handoffs_with_action,
            avg_seconds_to_first_action=summary.avg_seconds,
            median_seconds_to_first_action=summary.median_seconds,
            p95_seconds_to_first_action=summary.p95_seconds,
            p75_seconds_to_first_action=summary.p75_seconds,
            p90_seconds_to_first_action=summary.p90_seconds,
            max_seconds_to_first_action=summary.max_seconds,
            n_handoffs_without_action=summary.n_handoffs_without_action,
            action_rate=summary.action_rate,
            # Age now; a claim later than now (clock skew) has waited zero seconds.
            oldest_waiting_seconds=(
                None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3)
            ),
            distribution=tuple(
                {"bucket": key, "min_seconds": low, "max_seconds": high, "count": count}
                for (key, low, high), count in zip(LAG_BUCKETS, summary.bucket_counts)
            ),
            target_seconds=target_seconds,
            n_handoffs_within_target=summary.n_within_target,
            within_target_rate=summary.within_target_rate,
        )


def empty_summary(*, with_target=False):
    return summarize_lags(0, [], target_microseconds=0 if with_target else None)


def first_action_subquery():
    """The earliest step after the claim, of the same session and account."""
    steps = AiSessionStep.objects.filter(
        session_id=OuterRef("session_id"),
        # Denormalised, so redundant when the data is sound; kept so that a
        # mis-attributed step of another tenant can never count.
        account_id=OuterRef("account_id"),
        # Strictly after: a step stamped at the claim instant is not an action
        # taken after the claim.
        created_at__gt=OuterRef("claimed_at"),
    )
    return Subquery(steps.order_by("created_at").values("created_at")[:1])


def claimed_handoffs_with_first_action(*, accounts, start, end, end_inclusive=True):
    """Claimed handoffs of ``accounts`` in the window, annotated ``first_action_at``."""
    account_ids = [_account_id(account) for account in accounts]
    return _claimed_in_window(start, end, end_inclusive).filter(account_id__in=account_ids)


def handoffs_in_window(*, account, window):
    """One account's claimed handoffs of a :class:`~flowpilot_analytics.windows.Window`, with ``first_action_at``."""
    return claimed_handoffs_with_first_action(
        accounts=[account], start=window.start, end=window.end, end_inclusive=window.closed
    )


def _claimed_in_window(start, end, end_inclusive=True):
    # claimed_at in a range implies claimed_at IS NOT NULL, so PostgreSQL can
    # use the partial index on claimed rows.
    end_lookup = "claimed_at__lte" if end_inclusive else "claimed_at__lt"
    return SessionHandoff.objects.filter(claimed_at__gte=start, **{end_lookup: end}).annotate(
        first_action_at=first_action_subquery()
    )


def escalation_metrics(*, account, period=None, window=None, now=None, target_seconds=None):
    """Every figure of one account over a period ending ``now``, or over ``window``."""
    return escalation_metrics_by_account(
        accounts=[account], period=period, window=window, now=now, target_seconds=target_seconds
    )[_account_id(account)]


def escalation_metrics_by_account(*, accounts=None, period=None, window=None, now=None, target_seconds=None):
    """The figures of many accounts at once, in one query: ``{account_id: EscalationMetrics}``.

    ``accounts`` is an iterable of accounts or ids; ``None`` means every account
    (one extra query to list them). Accounts without data get zero counts.
    Give ``period`` (a window ending ``now``) or ``window``.
    """
    now = now or timezone.now()
    window = window or window_for_period(period, now=now)
    if accounts is None:
        account_ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
    else:
        account_ids = [_account_id(account) for account in accounts]
    target_us = _target_microseconds(target_seconds)
    summaries = _summaries_by_account(account_ids, window, target_us) if account_ids else {}
    empty = empty_summary(with_target=target_us is not None)
    return {
        account_id: EscalationMetrics.from_summary(
            summaries.get(account_id, empty), window=window, now=now, target_seconds=target_seconds
        )
        for account_id in account_ids
    }


def escalation_metrics_grouped(*, handoffs, window, now=None, field=None, bucket_edges=None, target_seconds=None):
    """The figures of ``handoffs`` grouped in one query: ``{key: EscalationMetrics}``.

    ``handoffs`` comes from :func:`handoffs_in_window` (already scoped to one
    account and narrowed as the caller likes). The key is the value of the
    handoff column ``field`` (e.g. ``"claimed_by_id"``), or, with
    ``bucket_edges`` (sorted aware instants), the index ``i`` of the bucket
    ``edges[i] <= claimed_at < edges[i + 1]``; with neither, ``None``. Groups
    without handoffs are absent: the caller knows which keys it expects.
    """
    now = now or timezone.now()
    target_us = _target_microseconds(target_seconds)
    connection = connections[handoffs.db]
    grouping = _Grouping(field=field, bucket_edges=tuple(bucket_edges) if bucket_edges else None)
    if connection.vendor == "postgresql":
        summaries = _grouped_in_sql(handoffs, grouping, target_us, connection)
    else:
        summaries = _grouped_in_python(handoffs, grouping, target_us)
    return {
        key: EscalationMetrics.from_summary(summary, window=window, now=now, target_seconds=target_seconds)
        for key, summary in summaries.items()
    }


def empty_metrics(*, window, now=None, target_seconds=None):
    """The figures of a window (or group) without any claimed handoff."""
    return EscalationMetrics.from_summary(
        empty_summary(with_target=target_seconds is not None),
        window=window,
        now=now or timezone.now(),
        target_seconds=target_seconds,
    )


# --- Per claimer, and the handoffs themselves ------------------------------------------

DELETED_CLAIMER = "deleted"
DELETED_CLAIMER_NAME = "(deleted user)"


def handoffs_of_claimer(handoffs, claimed_by):
    """``handoffs`` narrowed to one claimer: a user id, ``"deleted"`` (claimer NULL), or ``None`` (all)."""
    if claimed_by is None:
        return handoffs
    if claimed_by == DELETED_CLAIMER:
        return handoffs.filter(claimed_by__isnull=True)
    return handoffs.filter(claimed_by_id=claimed_by)


def claimer_name(first_name, last_name, username):
    """As ``User.get_full_name()``, else the username; the deleted-claimer label without a user."""
    if username is None:
        return DELETED_CLAIMER_NAME
    return f"{first_name} {last_name}".strip() or username


def escalation_metrics_by_engineer(*, account, window, now=None, claimed_by=None):
    """Each claimer's figures over the window: ``[(user id or None, display name, EscalationMetrics)]``.

    Two queries whatever the number of claimers: the grouped figures, then the
    claimers' names. Claimers without handoffs in the window are absent, except
    ``claimed_by`` when it names an existing user (zero counts). Sorted by name;
    the deleted claimers (one row, id ``None``) last.
    """
    now = now or timezone.now()
    handoffs = handoffs_of_claimer(handoffs_in_window(account=account, window=window), claimed_by)
    grouped = escalation_metrics_grouped(handoffs=handoffs, window=window, now=now, field="claimed_by_id")
    # A claimer of the window is named; a user asked for by id only when a member
    # of the account, so that ids of other tenants' users cannot be probed.
    users = get_user_model().objects.filter(pk__in=[key for key in grouped if key is not None])
    if isinstance(claimed_by, int):
        users |= get_user_model().objects.filter(pk=claimed_by, flowpilot_memberships__account=account)
    names = {
        pk: claimer_name(first, last, username)
        for pk, first, last, username in users.values_list("pk", "first_name", "last_name", "username")
    }
    if isinstance(claimed_by, int) and claimed_by in names:
        grouped.setdefault(claimed_by, empty_metrics(window=window, now=now))
    rows = [
        (key, names[key] if key is not None else DELETED_CLAIMER_NAME, metrics)
        for key, metrics in grouped.items()
        if key is None or key in names
    ]
    return sorted(rows, key=lambda row: (row[0] is None, row[1].casefold(), row[0] or 0))


def handoffs_with_lag(*, account, window):
    """:func:`handoffs_in_window` annotated ``lag`` (``first_action_at - claimed_at``, NULL without action).

    ``lag`` is for ordering and paging in SQL only: it is positive (the first
    action is strictly after the claim) so it orders exactly as the floored lag
    of :func:`handoff_rows`, which is the one the figures use.
    """
    return handoffs_in_window(account=account, window=window).annotate(
        lag=ExpressionWrapper(F("first_action_at") - F("claimed_at"), output_field=DurationField())
    )


HANDOFF_ROW_COLUMNS = (
    "id",
    "session_id",
    "claimed_at",
    "claimed_by_id",
    "claimed_by__first_name",
    "claimed_by__last_name",
    "claimed_by__username",
    "first_action_at",
)


def handoff_rows(handoffs):
    """The rows of ``handoffs`` (one query, the claimer joined): dicts with the claimer's name and the lag.

    ``seconds_to_first_action`` is :func:`~flowpilot_analytics.stats.lag_microseconds`
    rounded by :func:`~flowpilot_analytics.stats.to_seconds`: the same integers
    the summary's statistics are taken over.
    """
    for row in handoffs.values(*HANDOFF_ROW_COLUMNS):
        yield {
            "id": row["id"],
            "session_id": row["session_id"],
            "claimed_at": row["claimed_at"],
            "claimed_by_id": row["claimed_by_id"],
            "claimed_by_name": claimer_name(
                row["claimed_by__first_name"], row["claimed_by__last_name"], row["claimed_by__username"]
            ),
            "first_action_at": row["first_action_at"],
            "seconds_to_first_action": to_seconds(lag_microseconds(row["claimed_at"], row["first_action_at"])),
        }


def _account_id(account):
    return account.pk if isinstance(account, Account) else int(account)


def _target_microseconds(target_seconds):
    return None if target_seconds is None else round(target_seconds * MICROSECONDS_PER_SECOND)


@dataclass(frozen=True)
class _Grouping:
    field: str | None = None
    bucket_edges: tuple | None = None

    def key_of(self, row_key, claimed_at):
        if self.bucket_edges is not None:
            return bisect.bisect_right(self.bucket_edges, claimed_at) - 1
        return row_key


def _summaries_by_account(account_ids, window, target_us):
    connection = connections[router.db_for_read(SessionHandoff)]
    if connection.vendor == "postgresql":
        return _summaries_in_sql(account_ids, window.start, window.end, connection, target_us, window.closed)
    queryset = claimed_handoffs_with_first_action(
        accounts=account_ids, start=window.start, end=window.end, end_inclusive=window.closed
    )
    return _summaries_in_python(queryset, target_us)


def _summaries_in_python(queryset, target_us=None):
    return _grouped_in_python(queryset, _Grouping(field="account_id"), target_us)


def _grouped_in_python(queryset, grouping, target_us):
    claimed = defaultdict(int)
    lags = defaultdict(list)
    oldest_waiting = {}
    rows = queryset.values_list(grouping.field or "account_id", "claimed_at", "first_action_at")
    for row_key, claimed_at, first_action_at in rows.iterator(chunk_size=5000):
        key = grouping.key_of(row_key if grouping.field else None, claimed_at)
        claimed[key] += 1
        lag = lag_microseconds(claimed_at, first_action_at)
        if lag is not None:
            lags[key].append(lag)
        elif key not in oldest_waiting or claimed_at < oldest_waiting[key]:
            oldest_waiting[key] = claimed_at
    return {
        key: summarize_lags(
            n,
            lags[key],
            target_microseconds=target_us,
            oldest_waiting_claimed_at=oldest_waiting.get(key),
        )
        for key, n in claimed.items()
    }


# Traps avoided (docs/scaling.md, "The statement"; timings in docs/benchmarks.md):
# * The handoffs subquery has the correlated first-action probe in its SELECT
#   list. Without a fence PostgreSQL would flatten it into the aggregates and
#   run the probe once per reference to the lag (count, sum, percentiles...).
#   OFFSET 0 keeps it a subquery, so the probe runs once per handoff, streamed
#   (a MATERIALIZED CTE would also fence it, but spills every row to a
#   tuplestore first).
# * The lag references first_action_at once, so it is NULL exactly when there
#   is no action. No GREATEST(0, ...): GREATEST(0, NULL) is 0 in PostgreSQL and
#   would turn "no action" into a zero-second action. The floor of the
#   definition cannot trigger here, the probe being strictly after the claim.
# * date_part (double precision) rather than EXTRACT (numeric since PostgreSQL
#   14, slower): the epoch of an interval has microsecond resolution, so
#   rounding it times 10^6 recovers the exact integer.
# sum() of bigint is an exact numeric; the percentiles share one sort.
_LAGS_SQL = """
        SELECT {key} AS group_key, claimed_at,
               round(date_part('epoch', first_action_at - claimed_at) * 1000000)::bigint AS lag_us
        FROM ({handoffs}) AS handoffs
        OFFSET 0
"""


def _bucket_filters():
    lowers = (None, *BUCKET_UPPER_EDGES_US)
    uppers = (*BUCKET_UPPER_EDGES_US, None)
    filters = []
    for low, high in zip(lowers, uppers):
        conditions = ["lag_us IS NOT NULL"]
        if low is not None:
            conditions.append(f"lag_us >= {low}")
        if high is not None:
            conditions.append(f"lag_us < {high}")
        filters.append(f"count(*) FILTER (WHERE {' AND '.join(conditions)})")
    return ", ".join(filters)


_AGGREGATES_SQL = f"""
    count(*) AS n_claimed,
    count(lag_us) AS n_with_action,
    sum(lag_us) AS total_us,
    percentile_cont(ARRAY[{", ".join(map(str, PERCENTILES.values()))}]::float8[])
        WITHIN GROUP (ORDER BY lag_us) AS percentiles_us,
    max(lag_us) AS max_us,
    ARRAY[{_bucket_filters()}] AS bucket_counts,
    count(*) FILTER (WHERE lag_us <= %s::bigint) AS n_within_target,
    min(claimed_at) FILTER (WHERE lag_us IS NULL) AS oldest_waiting
"""

# One row per requested account, each aggregated by its own LATERAL subquery:
# the handoffs come from an index-only scan of (account, claimed_at) with the
# account fixed, so no sort by account is needed before the percentiles.
_BY_ACCOUNT_SQL = (
    """
SELECT requested.account_id, figures.*
FROM unnest(%s::bigint[]) AS requested (account_id)
CROSS JOIN LATERAL (
    SELECT """
    + _AGGREGATES_SQL
    + """
    FROM ("""
    + _LAGS_SQL.format(key="NULL", handoffs="{handoffs}")
    + """) AS lags
) AS figures
"""
)

_GROUPED_SQL = (
    "SELECT group_key, "
    + _AGGREGATES_SQL
    + "FROM ("
    + _LAGS_SQL
    + ") AS lags GROUP BY group_key"
)


def summary_sql(*, account_ids, start, end, connection, target_us=None, end_inclusive=True):
    """The one PostgreSQL statement computing the figures of ``account_ids``: ``(sql, params)``.

    The handoffs and their first-action probe are the ORM's (``first_action_subquery``);
    the account comes from the outer ``requested`` row.
    """
    handoffs = _claimed_in_window(start, end, end_inclusive).filter(
        account_id=RawSQL("requested.account_id", (), output_field=BigIntegerField())
    )
    handoffs_sql, handoffs_params = (
        handoffs.values("claimed_at", "first_action_at").query.get_compiler(connection=connection).as_sql()
    )
    return _BY_ACCOUNT_SQL.format(handoffs=handoffs_sql), (list(account_ids), target_us, *handoffs_params)


def _summaries_in_sql(account_ids, start, end, connection, target_us=None, end_inclusive=True):
    sql, params = summary_sql(
        account_ids=account_ids,
        start=start,
        end=end,
        connection=connection,
        target_us=target_us,
        end_inclusive=end_inclusive,
    )
    return _fetch_summaries(connection, sql, params, target_us)


def _grouped_in_sql(handoffs, grouping, target_us, connection):
    columns = ["claimed_at", "first_action_at"] + ([grouping.field] if grouping.field else [])
    handoffs_sql, handoffs_params = (
        handoffs.values(*columns).query.get_compiler(connection=connection).as_sql()
    )
    params = [target_us]
    if grouping.bucket_edges is not None:
        # width_bucket counts the edges <= claimed_at: bisect_right, as in Python.
        key = "width_bucket(claimed_at, %s::timestamptz[]) - 1"
        params.append(list(grouping.bucket_edges))
    elif grouping.field:
        key = connection.ops.quote_name(grouping.field)
    else:
        key = "NULL::integer"
    sql = _GROUPED_SQL.format(key=key, handoffs=handoffs_sql)
    return _fetch_summaries(connection, sql, (*params, *handoffs_params), target_us)


def _fetch_summaries(connection, sql, params, target_us):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: summary_from_row(row[1:], target_us=target_us) for row in cursor.fetchall()}


def summary_from_row(row, *, target_us=None):
    """A ``LagSummary`` from the aggregate columns of ``_AGGREGATES_SQL``, in their order."""
    n_claimed, n_with_action, total_us, percentiles_us, max_us, buckets, n_within, oldest = row
    return LagSummary.from_aggregates(
        n_claimed=n_claimed,
        n_with_action=n_with_action,
        total_us=total_us,
        percentiles_us=percentiles_us,
        max_us=max_us,
        bucket_counts=buckets,
        n_within_target=None if target_us is None else n_within,
        oldest_waiting_claimed_at=oldest,
    )
