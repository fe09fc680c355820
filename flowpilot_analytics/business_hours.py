"""
Business hours: when an account is open, and how much of a lag fell in that time. Pure, no Django.

A :class:`Schedule` is an account's calendar as plain data (an IANA time zone,
weekly intervals in local time, closed local dates). Its instants of opening
are :class:`OpenPeriods`: the UTC periods it is open between two instants,
sorted and merged, each with the open microseconds before it. Then the open
time up to an instant ``t``, ``B(t)``, is one binary search, and the business
lag of a handoff is ``B(first_action_at) - B(claimed_at)``:
:meth:`OpenPeriods.lag_us` in Python, and the same arithmetic in SQL over the
same periods (:class:`~flowpilot_analytics.clocks.BusinessClock`, with
``width_bucket`` as the binary search), so both paths count the same
microseconds.

Local times (CONTRACT.md, "Business hours"): a boundary that occurs twice on a
DST change day is its first occurrence (``fold=0``); one that does not exist is
moved forward by the gap (``fold=0`` does exactly that with ``zoneinfo``: the
offset before the change applies); ``closes = 00:00`` is midnight at the end of
the day. An interval whose two boundaries land in the wrong order after that (a
gap between them) is empty; periods that overlap after it are counted once.
"""

import bisect
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIDNIGHT = time(0)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def interval_error(opens, closes):
    """Why ``opens``-``closes`` is not an interval (``None`` when it is): ``opens < closes``, or closes at 00:00."""
    if closes == MIDNIGHT:
        return None
    if opens >= closes:
        return "Must be after opens (or 00:00 for midnight at the end of the day)."
    return None


def interval_end(closes):
    """``closes`` as minutes after the day's midnight: 00:00 is the end of the day (1440)."""
    return 24 * 60 if closes == MIDNIGHT else closes.hour * 60 + closes.minute + closes.second / 60


def overlapping_intervals(intervals):
    """The pairs of ``(weekday, opens, closes)`` that overlap on the same weekday (touching is fine)."""
    pairs = []
    by_day = {}
    for interval in intervals:
        by_day.setdefault(interval[0], []).append(interval)
    for day_intervals in by_day.values():
        ordered = sorted(day_intervals, key=lambda item: (item[1], interval_end(item[2])))
        for before, after in zip(ordered, ordered[1:]):
            if _minutes(after[1]) < interval_end(before[2]):
                pairs.append((before, after))
    return pairs


def _minutes(value):
    return value.hour * 60 + value.minute + value.second / 60 + value.microsecond / 60e6


def to_us(instant):
    """An aware instant as whole microseconds since the epoch (exact)."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def local_instant(day, at, tz):
    """The UTC instant of local ``day`` at ``at`` in ``tz``: the first occurrence, or after the gap."""
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """An account's business hours as plain data."""

    time_zone: str
    # (weekday 0 = Monday, opens, closes), local times.
    intervals: tuple = ()
    closed_dates: frozenset = field(default_factory=frozenset)

    def periods(self, start, end):
        """The :class:`OpenPeriods` of the local days around ``start``..``end`` (aware instants)."""
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(self.time_zone)
        by_weekday = {}
        for weekday, opens, closes in self.intervals:
            by_weekday.setdefault(weekday, []).append((opens, closes))
        # A day before and after: a local day may start up to 26 hours from a UTC date's.
        day = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date() + timedelta(days=1)
        raw = []
        while day <= last:
            if day not in self.closed_dates:
                for opens, closes in by_weekday.get(day.weekday(), ()):
                    open_at = local_instant(day, opens, tz)
                    close_at = (
                        local_instant(day + timedelta(days=1), MIDNIGHT, tz)
                        if closes == MIDNIGHT
                        else local_instant(day, closes, tz)
                    )
                    if close_at > open_at:
                        raw.append((to_us(open_at), to_us(close_at)))
            day += timedelta(days=1)
        return OpenPeriods.merged(raw)


@dataclass(frozen=True)
class OpenPeriods:
    """Sorted, disjoint open periods ``[starts[i], ends[i])`` in epoch microseconds, and the open time before each."""

    starts: tuple = ()
    ends: tuple = ()
    # Open microseconds in the periods before period i.
    before: tuple = ()

    @classmethod
    def merged(cls, periods):
        merged = []
        for start, end in sorted(periods):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        before, total = [], 0
        for start, end in merged:
            before.append(total)
            total += end - start
        return cls(tuple(s for s, _ in merged), tuple(e for _, e in merged), tuple(before))

    def open_us_until(self, instant_us):
        """``B(t)``: open microseconds from the first period to ``instant_us``."""
        index = bisect.bisect_right(self.starts, instant_us) - 1
        if index < 0:
            return 0
        return self.before[index] + min(instant_us, self.ends[index]) - self.starts[index]

    def lag_us(self, claimed_at, first_action_at):
        """Open microseconds between the claim and the first action, floored at zero; ``None`` without action."""
        if first_action_at is None:
            return None
        return max(0, self.open_us_until(to_us(first_action_at)) - self.open_us_until(to_us(claimed_at)))