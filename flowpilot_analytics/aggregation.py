"""
How claimed handoffs become figures, group by group: :func:`aggregate`, the one entry point.

It takes the handoffs (a queryset of :mod:`flowpilot_analytics.selectors`,
annotated ``first_action_at``), a :class:`Grouping` and a
:class:`~flowpilot_analytics.figures.Context`, and answers ``{group key: Figures}``.
On PostgreSQL every figure is aggregated in SQL, one statement with one row per
group (:mod:`flowpilot_analytics.sql`), so no per-handoff data crosses the wire;
elsewhere (SQLite) the lags are streamed into Python (:func:`aggregate_in_python`).
Both compute the spec's aggregates (:mod:`flowpilot_analytics.figures`) from the
same whole microseconds (the context's clock), so they give identical figures.

The database is the queryset's own (``handoffs.db``: the router's read alias for
handoffs, a replica when configured), and the vendor that database's.
"""

import bisect
from collections import defaultdict
from dataclasses import dataclass

from django.db import connections

from .figures import Lags, summarize
from .sql import HANDOFF_COLUMNS, aggregate_in_sql


@dataclass(frozen=True)
class Grouping:
    """How handoffs are grouped; each group's figures are computed apart.

    * ``accounts``: account ids. Only their handoffs count, and each is a group,
      even one without handoffs (zero counts, null statistics);
    * ``field``: a handoff column (``"claimed_by_id"``): a group per value;
    * ``bucket_edges``: sorted aware instants: group ``i`` holds the handoffs
      with ``edges[i] <= claimed_at < edges[i + 1]`` (``-1`` before the first).

    A group's key is its account id, or its field value or bucket index, or the
    pair ``(account id, value or index)`` when ``accounts`` is combined with one
    of the others; a group there exists only when it has handoffs. With nothing
    given, all the handoffs are one group keyed ``None``.
    """

    accounts: tuple[int, ...] | None = None
    field: str | None = None
    bucket_edges: tuple | None = None

    @property
    def within_accounts(self):
        """Whether groups are split below the account (by field or bucket)."""
        return self.field is not None or self.bucket_edges is not None

    def key(self, account_id, key_within):
        if self.accounts is None:
            return key_within
        return (account_id, key_within) if self.within_accounts else account_id

    def key_within(self, value, claimed_at):
        if self.bucket_edges is not None:
            return bisect.bisect_right(self.bucket_edges, claimed_at) - 1
        return value


def aggregate(handoffs, *, grouping=Grouping(), context):
    """The figures of ``handoffs`` per group of ``grouping``: ``{key: Figures}``."""
    connection = connections[handoffs.db]
    if connection.vendor == "postgresql":
        return aggregate_in_sql(handoffs, grouping=grouping, context=context, connection=connection)
    return aggregate_in_python(handoffs, grouping=grouping, context=context)


def aggregate_in_python(handoffs, *, grouping=Grouping(), context):
    """:func:`aggregate` on any database: the handoffs' lags streamed into Python, one query."""
    if grouping.accounts is not None:
        handoffs = handoffs.filter(account_id__in=grouping.accounts)
    columns = ["account_id", *HANDOFF_COLUMNS, *([grouping.field] if grouping.field else [])]
    claimed = defaultdict(int)
    lags = defaultdict(list)
    oldest_waiting = {}
    for account_id, claimed_at, first_action_at, *value in handoffs.values_list(*columns).iterator(
        chunk_size=5000
    ):
        key = grouping.key(account_id, grouping.key_within(value[0] if value else None, claimed_at))
        claimed[key] += 1
        lag = context.clock.lag_us(claimed_at, first_action_at, account_id)
        if lag is not None:
            lags[key].append(lag)
        elif key not in oldest_waiting or claimed_at < oldest_waiting[key]:
            oldest_waiting[key] = claimed_at
    if grouping.accounts is not None and not grouping.within_accounts:
        for account_id in grouping.accounts:
            claimed.setdefault(account_id, 0)
    return {
        key: summarize(Lags(n_claimed, sorted(lags[key]), oldest_waiting.get(key)), context)
        for key, n_claimed in claimed.items()
    }
