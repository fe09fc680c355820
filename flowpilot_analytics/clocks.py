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

The contract's clock is the calendar's. Another one (business hours, counting
only the seconds an account is open) is another object with these two members;
nothing else changes.
"""

from dataclasses import dataclass

from .stats import MICROSECONDS_PER_SECOND


@dataclass(frozen=True)
class CalendarClock:
    """Elapsed time from the claim to the first action (the contract's lag)."""

    name: str = "calendar"

    def lag_sql(self):
        # References first_action_at once, so the lag is NULL exactly when there
        # is no action. No GREATEST(0, ...): GREATEST(0, NULL) is 0 in PostgreSQL
        # and would turn "no action" into a zero-second action; the floor of the
        # definition cannot trigger here, the probe being strictly after the claim.
        # date_part (double precision) rather than EXTRACT (numeric since
        # PostgreSQL 14, slower): the epoch of an interval has microsecond
        # resolution, so rounding it times 10^6 recovers the exact integer.
        return "round(date_part('epoch', first_action_at - claimed_at) * 1000000)::bigint", []

    @staticmethod
    def lag_us(claimed_at, first_action_at):
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
