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
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import connections
from django.db.models import OuterRef, Subquery
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
    return SessionHandoff.objects.filter(
        account_id__in=account_ids,
        claimed_at__gte=start,
        claimed_at__lte=end,
    ).annotate(first_action_at=first_action_subquery())


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
    queryset = claimed_handoffs_with_first_action(accounts=account_ids, start=start, end=end)
    connection = connections[queryset.db]
    if connection.vendor == "postgresql":
        return _summaries_in_sql(queryset, connection)
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


# The correlated subquery is evaluated once per handoff inside the MATERIALIZED
# CTE; aggregating straight over the annotated queryset would let PostgreSQL
# inline it and run it once per reference. GREATEST(0, NULL) is 0 in
# PostgreSQL, hence the CASE: a handoff without action must stay NULL, not
# become a zero-second action. date_part (float) rather than EXTRACT (numeric
# since PostgreSQL 14): the epoch of an interval has microsecond resolution, so
# rounding it times 10^6 recovers the exact integer.
_SUMMARY_SQL = """
WITH claimed AS MATERIALIZED ({handoffs}),
lags AS (
    SELECT account_id,
           CASE WHEN first_action_at IS NULL THEN NULL
                ELSE GREATEST(0, round(date_part('epoch', first_action_at - claimed_at) * 1000000))::bigint
           END AS lag_us
    FROM claimed
)
SELECT account_id,
       count(*),
       count(lag_us),
       sum(lag_us),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_us),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lag_us)
FROM lags
GROUP BY account_id
"""


def _summaries_in_sql(queryset, connection):
    handoffs = queryset.values("account_id", "claimed_at", "first_action_at")
    handoffs_sql, params = handoffs.query.get_compiler(connection=connection).as_sql()
    summaries = {}
    with connection.cursor() as cursor:
        cursor.execute(_SUMMARY_SQL.format(handoffs=handoffs_sql), params)
        for account_id, n_claimed, n_with_action, total_us, p50_us, p95_us in cursor.fetchall():
            summaries[account_id] = LagSummary(
                n_handoffs_claimed=n_claimed,
                n_handoffs_with_action=n_with_action,
                avg_seconds=mean_seconds(total_us, n_with_action),
                median_seconds=to_seconds(p50_us),
                p95_seconds=to_seconds(p95_us),
            )
    return summaries
