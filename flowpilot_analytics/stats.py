"""
Pure statistics of first-action lags: no Django, no database.

Lags are carried as whole microseconds (``int``) until the very end, so that
every path that computes the metric (Python here, SQL on PostgreSQL) starts
from the same exact integers and rounds the same way: the API, the admin and
the report agree to the millisecond whichever database serves them.
"""

import bisect
import math

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


def ratio(part, whole):
    """``part / whole`` rounded to 4 decimals; ``None`` when ``whole`` is zero."""
    return round(part / whole, 4) if whole else None


def counts_below_edges(sorted_lags_us):
    """How many of ``sorted_lags_us`` (ascending) are under each of BUCKET_UPPER_EDGES_US (cumulative)."""
    return [bisect.bisect_left(sorted_lags_us, edge) for edge in BUCKET_UPPER_EDGES_US]


def bucket_counts(counts_below, total):
    """The count of each of LAG_BUCKETS from :func:`counts_below_edges` and the number of lags."""
    cumulative = [*counts_below, total]
    return [high - low for low, high in zip([0, *cumulative[:-1]], cumulative)]


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
