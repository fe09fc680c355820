"""Windows and trend buckets: pure time maths, DST included, no database."""

from datetime import date, datetime, timedelta, timezone

import pytest

from flowpilot_analytics.windows import (
    MAX_WINDOW_DAYS,
    bucket_edges,
    custom_window,
    window_for_period,
    zone,
)

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def contains(window, instant):
    """Whether ``instant`` is in the window, by its definition (``Window``'s docstring)."""
    return window.start <= instant and (instant <= window.end if window.closed else instant < window.end)


def hours(edges):
    return [(b - a) / timedelta(hours=1) for a, b in zip(edges, edges[1:])]


def test_period_window_is_closed_and_ends_now():
    window = window_for_period("7d", now=NOW)
    assert (window.start, window.end, window.closed) == (NOW - timedelta(days=7), NOW, True)
    assert contains(window, NOW) and contains(window, NOW - timedelta(days=7))
    assert not contains(window, NOW - timedelta(days=7, microseconds=1))


def test_custom_window_dates_start_at_local_midnight_and_end_is_exclusive():
    window = custom_window(date(2026, 3, 1), date(2026, 3, 2), time_zone="Europe/Paris")
    assert window.start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert contains(window, window.start) and not contains(window, window.end)


def test_naive_datetimes_are_local_and_aware_ones_are_kept():
    window = custom_window(
        datetime(2026, 1, 1, 9, 30), datetime(2026, 1, 2, 10, 0, tzinfo=UTC), time_zone="America/New_York"
    )
    assert window.start == datetime(2026, 1, 1, 14, 30, tzinfo=UTC)
    assert window.end == datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


def test_reversed_empty_and_too_long_windows_are_refused():
    with pytest.raises(ValueError, match="after start"):
        custom_window(date(2026, 1, 2), date(2026, 1, 1))
    with pytest.raises(ValueError, match="after start"):
        custom_window(date(2026, 1, 1), date(2026, 1, 1))
    with pytest.raises(ValueError, match=str(MAX_WINDOW_DAYS)):
        custom_window(date(2025, 1, 1), date(2026, 1, 3))
    assert custom_window(date(2025, 1, 1), date(2026, 1, 2)).length == timedelta(days=366)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", " UTC", "../etc/passwd", "utc\x00"])
def test_unknown_time_zones_are_refused(name):
    with pytest.raises(ValueError, match="time zone"):
        zone(name)


def test_previous_window_is_as_long_and_just_before():
    window = window_for_period("30d", now=NOW)
    previous = window.previous()
    assert previous.end == window.start and previous.length == window.length
    assert not contains(previous, window.start)


def test_daily_buckets_are_23_and_25_hours_long_across_dst():
    spring = custom_window(date(2026, 3, 28), date(2026, 3, 31), time_zone="Europe/Berlin")
    autumn = custom_window(date(2026, 10, 24), date(2026, 10, 27), time_zone="Europe/Berlin")
    assert hours(bucket_edges(spring, "day")) == [24, 23, 24]
    assert hours(bucket_edges(autumn, "day")) == [24, 25, 24]


def test_weekly_buckets_start_on_local_monday():
    window = custom_window(date(2026, 3, 4), date(2026, 3, 20), time_zone="America/New_York")
    edges = bucket_edges(window, "week")
    local = [edge.astimezone(zone("America/New_York")) for edge in edges]
    assert [d.date() for d in local] == [date(2026, 3, 2), date(2026, 3, 9), date(2026, 3, 16), date(2026, 3, 23)]
    assert all(d.hour == 0 and d.weekday() == 0 for d in local)
    assert hours(edges) == [167, 168, 168]  # US DST began on 8 March 2026


def test_buckets_cover_a_closed_window_including_its_end():
    window = window_for_period("7d", now=datetime(2026, 6, 15, 0, 0, tzinfo=UTC))
    edges = bucket_edges(window, "day")
    assert edges[0] <= window.start and edges[-1] > window.end
    assert len(edges) == 9  # 8 buckets: the end instant opens a bucket of its own


def test_unknown_interval_is_refused():
    with pytest.raises(ValueError, match="interval"):
        bucket_edges(window_for_period("7d", now=NOW), "month")
