"""The business clock (CONTRACT.md, "Business hours"): its rules, and both paths against a plain reference.

The reference intersects the lag with every open interval of every local day,
resolving local times on its own (first occurrence of a repeated time, a time
in a gap moved forward by the gap), with no period arrays and no binary search.
"""

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpilot_analytics.business_hours import OpenPeriods, Schedule, overlapping_intervals, to_us

UTC = timezone.utc
NINE_TO_SIX = tuple((weekday, time(9), time(18)) for weekday in range(5))


def reference_instant(day, at, tz):
    """Local ``day`` ``at`` in ``tz`` as UTC: the first occurrence; in a gap, the offset before it."""
    naive = datetime.combine(day, at)
    offsets = set()
    for hours in range(-36, 37, 3):
        probe = (naive - timedelta(hours=hours)).replace(tzinfo=UTC)
        offsets.add(probe.astimezone(tz).utcoffset())
    valid = [
        (naive - offset).replace(tzinfo=UTC)
        for offset in offsets
        if ((naive - offset).replace(tzinfo=UTC)).astimezone(tz).replace(tzinfo=None) == naive
    ]
    if valid:
        return min(valid)
    before = (naive - timedelta(days=1)).replace(tzinfo=UTC).astimezone(tz).utcoffset()
    return (naive - before).replace(tzinfo=UTC)


def reference_lag_us(schedule, claimed_at, first_action_at):
    """Microseconds of [claim, action] inside the open intervals (each instant once)."""
    if first_action_at is None:
        return None
    tz = ZoneInfo(schedule.time_zone)
    pieces = []
    day = claimed_at.astimezone(tz).date() - timedelta(days=2)
    while day <= first_action_at.astimezone(tz).date() + timedelta(days=2):
        if day not in schedule.closed_dates:
            for weekday, opens, closes in schedule.intervals:
                if weekday != day.weekday():
                    continue
                open_at = reference_instant(day, opens, tz)
                if closes == time(0):
                    close_at = reference_instant(day + timedelta(days=1), time(0), tz)
                else:
                    close_at = reference_instant(day, closes, tz)
                low, high = max(open_at, claimed_at), min(close_at, first_action_at)
                if low < high:
                    pieces.append((to_us(low), to_us(high)))
        day += timedelta(days=1)
    total, reach = 0, None
    for low, high in sorted(pieces):
        if reach is not None and low < reach:
            low = reach
        if low < high:
            total += high - low
        reach = high if reach is None else max(reach, high)
    return total


def lag(schedule, claimed_at, first_action_at):
    """The Python path, with periods over a range as a request builds them (the window's start to after now)."""
    periods = schedule.periods(claimed_at - timedelta(days=3), first_action_at + timedelta(days=31))
    return periods.lag_us(claimed_at, first_action_at)


def paris(*args):
    return datetime(*args, tzinfo=ZoneInfo("Europe/Paris"))


# --- The contract's examples and rules ----------------------------------------------------


def test_friday_1755_to_monday_0905_is_ten_minutes():
    schedule = Schedule("Europe/Paris", NINE_TO_SIX)
    # 4 December 2026 is a Friday.
    assert lag(schedule, paris(2026, 12, 4, 17, 55), paris(2026, 12, 7, 9, 5)) == 600_000_000


def test_a_claim_and_action_inside_a_closed_weekend_is_zero():
    schedule = Schedule("Europe/Paris", NINE_TO_SIX)
    assert lag(schedule, paris(2026, 12, 5, 10), paris(2026, 12, 6, 15)) == 0


def test_a_closed_date_counts_nothing():
    schedule = Schedule("Europe/Paris", NINE_TO_SIX, frozenset({date(2026, 12, 7)}))
    # Friday 17:55 to Tuesday 09:05, the Monday closed: 5 min on Friday, 5 min on Tuesday.
    assert lag(schedule, paris(2026, 12, 4, 17, 55), paris(2026, 12, 8, 9, 5)) == 600_000_000


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)], ids=["spring-forward", "fall-back"])
def test_nine_to_six_is_nine_hours_on_both_dst_change_days(day):
    schedule = Schedule("Europe/Paris", tuple((weekday, time(9), time(18)) for weekday in range(7)))
    midnight = datetime.combine(day, time(0), tzinfo=ZoneInfo("Europe/Paris"))
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo("Europe/Paris"))
    assert lag(schedule, midnight, next_midnight) == 9 * 3600 * 10**6


def test_a_whole_day_interval_follows_the_day_length_on_dst_days():
    schedule = Schedule("Europe/Paris", tuple((weekday, time(0), time(0)) for weekday in range(7)))
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)  # 29 March, local midnight (23 hours long)
    assert lag(schedule, start, start + timedelta(hours=23)) == 23 * 3600 * 10**6
    start = datetime(2026, 10, 24, 22, tzinfo=UTC)  # 25 October, local midnight (25 hours long)
    assert lag(schedule, start, start + timedelta(hours=25)) == 25 * 3600 * 10**6


def test_a_repeated_boundary_is_its_first_occurrence_and_a_missing_one_moves_forward():
    # 02:30 happens twice on 25 October in Paris: an interval 02:30-04:00 opens at the first (00:30 UTC).
    fall = Schedule("Europe/Paris", ((6, time(2, 30), time(4)),))
    assert lag(fall, datetime(2026, 10, 25, 0, tzinfo=UTC), datetime(2026, 10, 25, 6, tzinfo=UTC)) == (
        (2 * 3600 + 30 * 60) * 10**6  # 00:30 UTC to 03:00 UTC (04:00 CET)
    )
    # 02:30 does not exist on 29 March: it opens at 03:30 CEST (01:30 UTC); 04:00 CEST is 02:00 UTC.
    spring = Schedule("Europe/Paris", ((6, time(2, 30), time(4)),))
    assert lag(spring, datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 6, tzinfo=UTC)) == (
        30 * 60 * 10**6
    )


def test_no_action_has_no_lag_and_a_lag_before_the_claim_is_zero():
    periods = Schedule("UTC", NINE_TO_SIX).periods(paris(2026, 12, 1), paris(2026, 12, 31))
    assert periods.lag_us(paris(2026, 12, 4, 10), None) is None
    assert periods.lag_us(paris(2026, 12, 4, 10), paris(2026, 12, 4, 9)) == 0


def test_overlaps_are_found_per_weekday_and_touching_is_fine():
    assert overlapping_intervals([(0, time(9), time(12)), (0, time(12), time(18)), (1, time(10), time(11))]) == []
    assert overlapping_intervals([(0, time(9), time(12)), (0, time(11), time(18))]) == [
        ((0, time(9), time(12)), (0, time(11), time(18)))
    ]
    assert overlapping_intervals([(0, time(20), time(0)), (0, time(23), time(23, 30))]) != []


# --- Property: both Python paths against the reference ------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]
QUARTERS = st.integers(min_value=0, max_value=96)  # quarter hours of a day; 96 is the end of the day


@st.composite
def schedules(draw):
    intervals = []
    for weekday in range(7):
        cuts = sorted(set(draw(st.lists(QUARTERS, max_size=6))))
        for opens, closes in zip(cuts[::2], cuts[1::2]):
            if draw(st.booleans()) or not intervals:
                intervals.append(
                    (weekday, time(opens // 4, opens % 4 * 15), time(0) if closes == 96 else time(closes // 4, closes % 4 * 15))
                )
    first = date(2026, 1, 1)
    closed = draw(st.frozensets(st.integers(0, 400).map(lambda n: first + timedelta(days=n)), max_size=40))
    return Schedule(draw(st.sampled_from(ZONES)), tuple(intervals), closed)


# Instants of 2026, often close to a DST change of one of the zones.
DST_CHANGES = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 4, 4, 15, tzinfo=UTC),
    datetime(2026, 9, 6, 4, tzinfo=UTC),
    datetime(2026, 10, 3, 15, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
]
CLAIMS = st.one_of(
    st.builds(
        lambda change, offset: change + timedelta(microseconds=offset),
        st.sampled_from(DST_CHANGES),
        st.integers(-3 * 86_400 * 10**6, 3 * 86_400 * 10**6),
    ),
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)).map(lambda moment: moment.replace(tzinfo=UTC)),
)
LAGS_US = st.one_of(
    st.integers(0, 6 * 7 * 86_400 * 10**6),
    st.integers(0, 3600 * 10**6),
    st.sampled_from([0, 1, 15 * 60 * 10**6, 86_400 * 10**6]),
)


@settings(max_examples=400, deadline=None)
@given(schedules(), CLAIMS, LAGS_US)
def test_python_path_agrees_with_the_reference(schedule, claimed_at, lag_us):
    action = claimed_at + timedelta(microseconds=lag_us)
    assert lag(schedule, claimed_at, action) == reference_lag_us(schedule, claimed_at, action)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), CLAIMS, LAGS_US)
def test_the_open_periods_do_not_depend_on_the_range_they_were_built_for(schedule, claimed_at, lag_us):
    action = claimed_at + timedelta(microseconds=lag_us)
    narrow = schedule.periods(claimed_at, action)
    wide = schedule.periods(claimed_at - timedelta(days=40), action + timedelta(days=60))
    assert narrow.lag_us(claimed_at, action) == wide.lag_us(claimed_at, action)


def test_merged_periods_count_an_overlap_once():
    periods = OpenPeriods.merged([(0, 10), (5, 20), (30, 40)])
    assert (periods.starts, periods.ends, periods.before) == ((0, 30), (20, 40), (0, 20))


def test_a_first_action_beyond_the_periods_counts_as_at_their_end():
    """The periods end a while after now (31 days in a request): a later action is counted up to there."""
    schedule = Schedule("UTC", tuple((weekday, time(0), time(0)) for weekday in range(7)))
    claimed = datetime(2026, 12, 1, tzinfo=UTC)
    periods = schedule.periods(claimed, datetime(2026, 12, 10, tzinfo=UTC))
    far = periods.lag_us(claimed, datetime(2027, 6, 1, tzinfo=UTC))
    assert far == to_us(datetime(2026, 12, 12, tzinfo=UTC)) - to_us(claimed)  # the day after the last, 24:00
