"""
Reads of the escalation metric: the one place it is computed.

The API, the admin widget and the report command all call these functions, so
they cannot disagree. The rules (CONTRACT.md, "The computation"):

* a handoff is in the window when ``start <= claimed_at <= end``; unclaimed
  handoffs never are;
* its first action is the earliest step of the same session (and the same
  account) created strictly after ``claimed_at``, found by one correlated
  subquery per handoff;
* the lag is floored at zero and the statistics are taken over the handoffs
  that have an action.

On PostgreSQL the statistics are aggregated in SQL (one statement, one row per
account) so that no per-handoff data crosses the wire; elsewhere (SQLite) the
lags are streamed into :mod:`flowpilot_analytics.stats`. Both start from whole
microseconds and round the same way, so they give identical figures.

The handoff rows are read from the database alias that the router gives the
activity tables (``FLOWPILOT_ANALYTICS_DB_ALIAS``: a read replica, if set).
Why the SQL looks the way it does, with measurements: docs/benchmarks.md.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router
from django.db.models import BigIntegerField, OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .constants import METRIC_DEFINITION
from .models import Account, AiSessionStep, SessionHandoff
from .periods import period_window
from .stats import LagSummary, lag_microseconds, mean_seconds, summarize_lags, to_seconds


@dataclass(frozen=True)
class EscalationMetrics:
    """The figures of one account over one window, as the API emits them."""

    period: str
    window_start: datetime
    window_end: datetime
    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds_to_first_action: float | None
    median_seconds_to_first_action: float | None
    p95_seconds_to_first_action: float | None
    metric_definition: str = METRIC_DEFINITION

    @classmethod
    def from_summary(cls, summary, *, period, window_start, window_end):
        return cls(
            period=period,
            window_start=window_start,
            window_end=window_end,
            n_handoffs_claimed=summary.n_handoffs_claimed,
            n_handoffs_with_action=summary.n_handoffs_with_action,
            avg_seconds_to_first_action=summary.avg_seconds,
            median_seconds_to_first_action=summary.median_seconds,
            p95_seconds_to_first_action=summary.p95_seconds,
        )


EMPTY_SUMMARY = LagSummary(0, 0, None, None, None)


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


def claimed_handoffs_with_first_action(*, accounts, start, end):
    """Claimed handoffs of ``accounts`` in ``[start, end]``, annotated ``first_action_at``."""
    account_ids = [_account_id(account) for account in accounts]
    return _claimed_in_window(start, end).filter(account_id__in=account_ids)


def _claimed_in_window(start, end):
    # claimed_at in a closed range implies claimed_at IS NOT NULL, so PostgreSQL
    # can use the partial index on claimed rows.
    return SessionHandoff.objects.filter(claimed_at__gte=start, claimed_at__lte=end).annotate(
        first_action_at=first_action_subquery()
    )


def escalation_metrics(*, account, period, now=None):
    """The contract's figures for one account over one period ending ``now``."""
    return escalation_metrics_by_account(accounts=[account], period=period, now=now)[
        _account_id(account)
    ]


def escalation_metrics_by_account(*, accounts=None, period, now=None):
    """The figures of many accounts at once, in one query: ``{account_id: EscalationMetrics}``.

    ``accounts`` is an iterable of accounts or ids; ``None`` means every account
    (one extra query to list them). Accounts without data get zero counts.
    """
    now = now or timezone.now()
    start, end = period_window(period, now)
    if accounts is None:
        account_ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
    else:
        account_ids = [_account_id(account) for account in accounts]
    summaries = _summaries_by_account(account_ids, start, end) if account_ids else {}
    return {
        account_id: EscalationMetrics.from_summary(
            summaries.get(account_id, EMPTY_SUMMARY),
            period=period,
            window_start=start,
            window_end=end,
        )
        for account_id in account_ids
    }


def _account_id(account):
    return account.pk if isinstance(account, Account) else int(account)


def _summaries_by_account(account_ids, start, end):
    connection = connections[router.db_for_read(SessionHandoff)]
    if connection.vendor == "postgresql":
        return _summaries_in_sql(account_ids, start, end, connection)
    queryset = claimed_handoffs_with_first_action(accounts=account_ids, start=start, end=end)
    return _summaries_in_python(queryset)


def _summaries_in_python(queryset):
    claimed = defaultdict(int)
    lags = defaultdict(list)
    rows = queryset.values_list("account_id", "claimed_at", "first_action_at")
    for account_id, claimed_at, first_action_at in rows.iterator(chunk_size=5000):
        claimed[account_id] += 1
        lag = lag_microseconds(claimed_at, first_action_at)
        if lag is not None:
            lags[account_id].append(lag)
    return {account_id: summarize_lags(n, lags[account_id]) for account_id, n in claimed.items()}


# One row per requested account, each aggregated by its own LATERAL subquery:
# the handoffs come from an index-only scan of (account, claimed_at) with the
# account fixed, so no sort by account is needed before the percentiles.
#
# Traps avoided (docs/scaling.md, "The statement"; timings in docs/benchmarks.md):
# * The handoffs subquery has the correlated first-action probe in its SELECT
#   list. Without a fence PostgreSQL would flatten it into the aggregates and
#   run the probe once per reference to the lag (count, sum, two percentiles).
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
# sum() of bigint is an exact numeric; the two percentile_cont share one sort.
_SUMMARY_SQL = """
SELECT requested.account_id,
       figures.n_claimed, figures.n_with_action, figures.total_us, figures.p50_us, figures.p95_us
FROM unnest(%s::bigint[]) AS requested (account_id)
CROSS JOIN LATERAL (
    SELECT count(*) AS n_claimed,
           count(lag_us) AS n_with_action,
           sum(lag_us) AS total_us,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_us) AS p50_us,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_us) AS p95_us
    FROM (
        SELECT round(date_part('epoch', first_action_at - claimed_at) * 1000000)::bigint AS lag_us
        FROM ({handoffs}) AS handoffs
        OFFSET 0
    ) AS lags
) AS figures
"""


def summary_sql(*, account_ids, start, end, connection):
    """The one PostgreSQL statement computing the figures of ``account_ids``: ``(sql, params)``.

    The handoffs and their first-action probe are the ORM's (``first_action_subquery``);
    the account comes from the outer ``requested`` row.
    """
    handoffs = _claimed_in_window(start, end).filter(
        account_id=RawSQL("requested.account_id", (), output_field=BigIntegerField())
    )
    handoffs_sql, handoffs_params = (
        handoffs.values("claimed_at", "first_action_at").query.get_compiler(connection=connection).as_sql()
    )
    return _SUMMARY_SQL.format(handoffs=handoffs_sql), (list(account_ids), *handoffs_params)


def _summaries_in_sql(account_ids, start, end, connection):
    sql, params = summary_sql(account_ids=account_ids, start=start, end=end, connection=connection)
    summaries = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for account_id, n_claimed, n_with_action, total_us, p50_us, p95_us in cursor.fetchall():
            summaries[account_id] = LagSummary(
                n_handoffs_claimed=n_claimed,
                n_handoffs_with_action=n_with_action,
                avg_seconds=mean_seconds(total_us, n_with_action),
                median_seconds=to_seconds(p50_us),
                p95_seconds=to_seconds(p95_us),
            )
    return summaries
