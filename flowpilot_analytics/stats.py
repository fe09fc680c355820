"""
Pure statistics of first-action lags: no Django, no database.

Lags are carried as whole microseconds (``int``) until the very end, so that
every path that computes the metric (Python here, SQL on PostgreSQL) starts
from the same exact integers and rounds the same way: the API, the admin and
the report agree to the millisecond whichever database serves them.
"""

import bisect
import math
from dataclasses import dataclass
from datetime import datetime

MICROSECONDS_PER_SECOND = 1_000_000

# The fixed edges of the lag distribution: (key, lower bound inclusive, upper
# bound exclusive), in seconds; the last bucket is open-ended.
LAG_BUCKETS = (
    ("under_1m", 0, 60),
    ("1m_to_5m", 60, 300),
    ("5m_to_15m", 300, 900),
    ("15m_to_60m", 900, 3_600),
    ("1h_to_4h", 3_600, 14_400),
    ("4h_to_24h", 14_400, 86_400),
    ("over_24h", 86_400, None),
)
BUCKET_UPPER_EDGES_US = tuple(upper * MICROSECONDS_PER_SECOND for _, _, upper in LAG_BUCKETS[:-1])
# The percentiles every summary carries, as fractions.
PERCENTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95}


@dataclass(frozen=True)
class LagSummary:
    """The figures of a set of claimed handoffs: counts, statistics in seconds, distribution."""

    n_handoffs_claimed: int
    n_handoffs_with_action: int
    avg_seconds: float | None
    median_seconds: float | None
    p95_seconds: float | None
    p75_seconds: float | None = None
    p90_seconds: float | None = None
    max_seconds: float | None = None
    # Counts per LAG_BUCKETS, summing to n_handoffs_with_action.
    bucket_counts: tuple[int, ...] = (0,) * len(LAG_BUCKETS)
    # Handoffs whose lag is at most the target, when a target was given.
    n_within_target: int | None = None
    # The earliest claim still without an action (its age is "oldest waiting").
    oldest_waiting_claimed_at: datetime | None = None

    @classmethod
    def from_aggregates(
        cls,
        *,
        n_claimed,
        n_with_action,
        total_us,
        percentiles_us,
        max_us,
        bucket_counts,
        n_within_target=None,
        oldest_waiting_claimed_at=None,
    ):
        """The summary from figures aggregated elsewhere (in SQL), rounded exactly as here."""
        percentiles_us = percentiles_us or [None] * len(PERCENTILES)
        seconds = dict(zip(PERCENTILES, map(to_seconds, percentiles_us)))
        return cls(
            n_handoffs_claimed=n_claimed,
            n_handoffs_with_action=n_with_action,
            avg_seconds=mean_seconds(total_us, n_with_action),
            median_seconds=seconds["median"],
            p95_seconds=seconds["p95"],
            p75_seconds=seconds["p75"],
            p90_seconds=seconds["p90"],
            max_seconds=to_seconds(max_us),
            bucket_counts=tuple(int(count) for count in bucket_counts),
            n_within_target=n_within_target,
            oldest_waiting_claimed_at=oldest_waiting_claimed_at,
        )

    @property
    def n_handoffs_without_action(self):
        return self.n_handoffs_claimed - self.n_handoffs_with_action

    @property
    def action_rate(self):
        """Share of claimed handoffs with an action (0..1, 4 decimals); ``None`` when none was claimed."""
        return ratio(self.n_handoffs_with_action, self.n_handoffs_claimed)

    @property
    def within_target_rate(self):
        """Share of handoffs with an action that met the target; ``None`` without target or actions."""
        if self.n_within_target is None:
            return None
        return ratio(self.n_within_target, self.n_handoffs_with_action)


def ratio(part, whole):
    return round(part / whole, 4) if whole else None


def bucket_index(lag_us):
    """The index in LAG_BUCKETS of a lag in microseconds."""
    return bisect.bisect_right(BUCKET_UPPER_EDGES_US, lag_us)


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


def summarize_lags(
    n_handoffs_claimed, lags_microseconds, *, target_microseconds=None, oldest_waiting_claimed_at=None
):
    """Every figure from the lags (whole microseconds) of the handoffs that saw an action."""
    lags = sorted(lags_microseconds)
    buckets = [0] * len(LAG_BUCKETS)
    for lag in lags:
        buckets[bucket_index(lag)] += 1
    return LagSummary.from_aggregates(
        n_claimed=n_handoffs_claimed,
        n_with_action=len(lags),
        total_us=sum(lags),
        percentiles_us=[percentile(lags, fraction) for fraction in PERCENTILES.values()],
        max_us=lags[-1] if lags else None,
        bucket_counts=buckets,
        n_within_target=(
            None if target_microseconds is None else bisect.bisect_right(lags, target_microseconds)
        ),
        oldest_waiting_claimed_at=oldest_waiting_claimed_at,
    )
