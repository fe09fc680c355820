"""The reporting periods of the contract and the windows they span (pure time maths)."""

from datetime import timedelta

PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90}
PERIODS = tuple(PERIOD_DAYS)
DEFAULT_PERIOD = "30d"


def period_window(period, now):
    """The closed window ``[now - N*24h, now]`` of a period such as ``"7d"``."""
    try:
        days = PERIOD_DAYS[period]
    except KeyError:
        raise ValueError(f"unknown period {period!r}; allowed: {', '.join(PERIODS)}") from None
    return now - timedelta(days=days), now
