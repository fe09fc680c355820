"""
Reporting periods, windows and trend buckets: pure time maths, no database.

A *window* is the span of ``claimed_at`` instants a report covers. The
contract's periods (``7d``/``30d``/``90d``) are closed windows ending now; a
custom ``start``/``end`` window is half-open (start inclusive, end exclusive),
which lets consecutive windows tile time without counting a claim twice.

Days and weeks start at local midnight in the caller's IANA time zone, so a
day is 23 or 25 hours long across a DST change; every boundary is converted to
an aware UTC instant before it reaches a query.
"""

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90}
PERIODS = tuple(PERIOD_DAYS)
DEFAULT_PERIOD = "30d"
MAX_WINDOW_DAYS = 366
INTERVALS = ("day", "week")
UTC = timezone.utc
# The instants a window may start or end at. Far wider than any escalation
# history, and far enough from datetime's own limits (years 1 and 9999) that a
# previous window, a week's Monday or a time zone's offset never overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """``start <= claimed_at <= end`` when ``closed``, else ``start <= claimed_at < end``."""

    start: datetime
    end: datetime
    closed: bool
    time_zone: str = "UTC"
    period: str | None = None

    @property
    def length(self):
        return self.end - self.start

    @property
    def period_name(self):
        """The period asked for, or ``"custom"`` for a ``start``/``end`` window."""
        return self.period or "custom"

    def previous(self):
        """The equally long window just before this one, half-open so the two never overlap."""
        return replace(self, start=self.start - self.length, end=self.start, closed=False, period=None)


def zone(name):
    """The ``ZoneInfo`` of an IANA name; ``ValueError`` for anything else."""
    if not name or not isinstance(name, str) or name != name.strip():
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def period_window(period, now):
    """The closed window ``[now - N*24h, now]`` of a period such as ``"7d"``."""
    try:
        days = PERIOD_DAYS[period]
    except KeyError:
        raise ValueError(f"unknown period {period!r}; allowed: {', '.join(PERIODS)}") from None
    return now - timedelta(days=days), now


def window_for_period(period, *, now, time_zone="UTC"):
    start, end = period_window(period, now)
    return Window(start=start, end=end, closed=True, time_zone=time_zone, period=period)


def to_instant(value, tz):
    """A date (local midnight), a naive date-time (local) or an aware date-time, as aware UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return local_midnight(value, tz)
    raise TypeError(f"expected a date or a datetime, got {type(value).__name__}")


def custom_window(start, end, *, time_zone="UTC"):
    """The half-open window ``[start, end)``; ``ValueError`` naming the culprit when it is not valid."""
    tz = zone(time_zone)
    start_at, end_at = (_bounded_instant(name, value, tz) for name, value in (("start", start), ("end", end)))
    if start_at >= end_at:
        raise ValueError("end: must be after start")
    if end_at - start_at > timedelta(days=MAX_WINDOW_DAYS):
        raise ValueError(f"end: the window may span at most {MAX_WINDOW_DAYS} days")
    return Window(start=start_at, end=end_at, closed=False, time_zone=time_zone)


def within_bounds(instant):
    return EARLIEST <= instant <= LATEST


def _bounded_instant(name, value, tz):
    try:
        instant = to_instant(value, tz)
    except OverflowError:
        instant = None
    if instant is None or not within_bounds(instant):
        raise ValueError(f"{name}: must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return instant


def local_midnight(day, tz):
    """The UTC instant at which ``day`` starts in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def bucket_edges(window, interval):
    """The UTC instants where the local days (or ISO weeks, from Monday) covering the window start.

    Returns ``n + 1`` edges for ``n`` buckets: the first is at or before the
    window's start, the last after (or, for a closed window, after) its end.
    """
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; allowed: {', '.join(INTERVALS)}")
    tz = zone(window.time_zone)
    step = 7 if interval == "week" else 1
    day = window.start.astimezone(tz).date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    edges = [local_midnight(day, tz)]
    while edges[-1] < window.end or (window.closed and edges[-1] == window.end):
        day += timedelta(days=step)
        edges.append(local_midnight(day, tz))
    return edges
