"""
Pure statistics of first-action lags: no Django, no database.

Lags are carried as whole microseconds (``int``) until the very end, so that
every path that computes the metric (Python here, SQL on PostgreSQL) starts
from the same exact integers and rounds the same way: the API, the admin and
the report agree to the millisecond whichever database serves them.
"""

import math
from dataclasses import dataclass

MICROSECONDS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class LagSummary:
    """The contract's figures: two counts and three statistics in seconds."""

    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds: float | None
    median_seconds: float | None
    p95_seconds: float | None


def lag_microseconds(claimed_at, first_action_at):
    """Whole microseconds from the claim to the first action, floored at zero.

    ``None`` when there is no action. The floor guards clock drift between the
    writers of the two timestamps; with the strictly-after rule of the selector
    it cannot trigger from stored data, but the function is the definition.
    """
    if first_action_at is None:
        return None
    delta = first_action_at - claimed_at
    micros = (delta.days * 86_400 + delta.seconds) * MICROSECONDS_PER_SECOND + delta.microseconds
    return max(0, micros)


def percentile(sorted_values, fraction):
    """Linear interpolation between closest ranks (PostgreSQL ``percentile_cont``).

    The arithmetic mirrors PostgreSQL's own (``lo + fraction_of_gap * (hi - lo)``
    in double precision), so both paths give bit-identical results.
    """
    if not sorted_values:
        return None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction!r}")
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    low_value = float(sorted_values[lower])
    if lower == upper:
        return low_value
    high_value = float(sorted_values[upper])
    return low_value + (position - lower) * (high_value - low_value)


def to_seconds(microseconds):
    """Microseconds (int or float) as seconds rounded to milliseconds; ``None`` stays."""
    if microseconds is None:
        return None
    return round(microseconds / MICROSECONDS_PER_SECOND, 3)


def mean_seconds(total_microseconds, count):
    """The arithmetic mean in seconds from an exact integer total."""
    if not count:
        return None
    return to_seconds(int(total_microseconds) / count)


def summarize_lags(n_handoffs_claimed, lags_microseconds):
    """The contract's figures from the lags of the handoffs that saw an action."""
    lags = sorted(lags_microseconds)
    return LagSummary(
        n_handoffs_claimed=n_handoffs_claimed,
        n_handoffs_with_action=len(lags),
        avg_seconds=mean_seconds(sum(lags), len(lags)),
        median_seconds=to_seconds(percentile(lags, 0.5)),
        p95_seconds=to_seconds(percentile(lags, 0.95)),
    )
