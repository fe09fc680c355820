"""
How long a claimed handoff waited for its first action: its lag, on a clock. Pure, no Django.

Every figure (:mod:`flowpilot_analytics.figures`) is taken over one lag per
handoff, ``lag_us``, in whole microseconds, and never asks how it was measured:
a clock says so, once for each path.

* ``lag_sql()``: the SQL expression (and its parameters) computing ``lag_us``
  on PostgreSQL from the handoff query's named columns ``claimed_at`` and
  ``first_action_at`` (NULL without action);
* ``lag_us()``: the same value in Python, for SQLite and for the drill-down's
  rows.

* ``periods_sql(account_ref)``: a ``FROM`` item the lag expression may read
  (``""`` when it needs none), joined to the handoffs once per statement (or
  once per account, ``account_ref`` naming the account of the rows).

Two clocks: the contract's calendar clock (:data:`CALENDAR`), and the business
clock (:class:`BusinessClock`), which counts only the seconds an account is open
(:mod:`flowpilot_analytics.business_hours`). Each is a function of
``(claimed_at, first_action_at)`` and the account's calendar only, so any source
of ``first_action_at`` (the probe, or a stored column) feeds it unchanged.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .business_hours import EPOCH, to_us
from .stats import MICROSECONDS_PER_SECOND


# The calendar lag in SQL, over two named timestamps. PostgreSQL's first-action index
# stores it too (FirstActionIndex.lag_us, a generated column of this expression), so that
# the readers of the index need not compute it per row.
CALENDAR_LAG_SQL = "round(date_part('epoch', {first_action_at} - {claimed_at}) * 1000000)::bigint"


@dataclass(frozen=True)
class CalendarClock:
    """Elapsed time from the claim to the first action (the contract's lag)."""

    name: str = "calendar"

    def periods_sql(self, account_ref=None):
        return "", []

    def lag_sql(self):
        # References first_action_at once, so the lag is NULL exactly when there
        # is no action. No GREATEST(0, ...): GREATEST(0, NULL) is 0 in PostgreSQL
        # and would turn "no action" into a zero-second action; the floor of the
        # definition cannot trigger here, the probe being strictly after the claim.
        # date_part (double precision) rather than EXTRACT (numeric since
        # PostgreSQL 14, slower): the epoch of an interval has microsecond
        # resolution, so rounding it times 10^6 recovers the exact integer.
        return CALENDAR_LAG_SQL.format(first_action_at="first_action_at", claimed_at="claimed_at"), []

    # A source of handoffs may carry this lag already computed, under this name (the index's column).
    stored_lag = "lag_us"

    @staticmethod
    def lag_us(claimed_at, first_action_at, account_id=None):
        """Whole microseconds from the claim to the first action, floored at zero; ``None`` without action.

        The floor guards clock drift between the writers of the two timestamps;
        with the strictly-after rule of the probe it cannot trigger from stored
        data, but the function is the definition.
        """
        if first_action_at is None:
            return None
        delta = first_action_at - claimed_at
        micros = (delta.days * 86_400 + delta.seconds) * MICROSECONDS_PER_SECOND + delta.microseconds
        return max(0, micros)


CALENDAR = CalendarClock()


CALENDAR_CLOCK = "calendar"
BUSINESS_CLOCK = "business"
CLOCKS = (CALENDAR_CLOCK, BUSINESS_CLOCK)
# The business clock's periods run this long past the request's now: a first action stamped
# later still (a writer's clock far ahead) counts as at that limit.
BUSINESS_PERIODS_BEYOND_NOW = timedelta(days=31)


def _bigint_array(values):
    return "{" + ",".join(map(str, values)) + "}"


@dataclass(frozen=True)
class BusinessClock:
    """Seconds inside an account's business hours from the claim to the first action.

    ``periods`` maps each account id to its :class:`~flowpilot_analytics.business_hours.OpenPeriods`
    over the instants the request may meet (:meth:`flowpilot_analytics.calendars.ClockChoice.for_window`).
    In SQL the periods are three bigint arrays (microseconds from ``base``), joined
    once; ``B(t)`` is ``width_bucket`` over the starts, and the lag ``B(first) - B(claim)``.
    """

    periods: dict = field(default_factory=dict)
    base: datetime = EPOCH
    name: str = BUSINESS_CLOCK
    # No source stores the business lag (it depends on the calendar).
    stored_lag = None

    def _periods_of(self, account_id):
        if account_id is None:
            if len(self.periods) != 1:
                raise ValueError("a business clock of several accounts needs the account of the handoff")
            return next(iter(self.periods.values()))
        return self.periods[account_id]

    def _relative(self, periods):
        base = to_us(self.base)
        return (
            [start - base for start in periods.starts],
            [end - base for end in periods.ends],
            list(periods.before),
        )

    def periods_sql(self, account_ref=None):
        if account_ref is None:
            return (
                "CROSS JOIN (SELECT %s::timestamptz AS base, %s::bigint[] AS starts, %s::bigint[] AS ends, "
                "%s::bigint[] AS open_before OFFSET 0) AS business_hours",
                [self.base, *self._relative(self._periods_of(None))],
            )
        # One row per account, its arrays as text, cast once per account (the fence keeps
        # the casts out of the per-row expressions).
        ids, starts, ends, before = [], [], [], []
        for account_id, periods in self.periods.items():
            ids.append(account_id)
            for target, values in zip((starts, ends, before), self._relative(periods)):
                target.append(_bigint_array(values))
        sql = (
            "CROSS JOIN (SELECT %s::timestamptz AS base, calendars.starts::bigint[] AS starts, "
            "calendars.ends::bigint[] AS ends, calendars.open_before::bigint[] AS open_before "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) "
            "AS calendars (account_id, starts, ends, open_before) "
            f"WHERE calendars.account_id = {account_ref} OFFSET 0) AS business_hours"
        )
        return sql, [self.base, ids, starts, ends, before]

    def lag_sql(self):
        def open_until(column):
            # Microseconds from base: small enough for date_part's double to be exact.
            at = f"round(date_part('epoch', {column} - business_hours.base) * 1000000)::bigint"
            bucket = f"width_bucket({at}, business_hours.starts)"
            # Index 0 (before the first period) reads NULL: no open time yet.
            sql = (
                f"coalesce(business_hours.open_before[{bucket}] + least({at}, business_hours.ends[{bucket}]) "
                f"- business_hours.starts[{bucket}], 0)"
            )
            return sql

        first, claim = open_until("first_action_at"), open_until("claimed_at")
        return f"CASE WHEN first_action_at IS NULL THEN NULL ELSE greatest(0, {first} - {claim}) END", []

    def lag_us(self, claimed_at, first_action_at, account_id=None):
        """Open microseconds from the claim to the first action, floored at zero; ``None`` without action."""
        return self._periods_of(account_id).lag_us(claimed_at, first_action_at)
