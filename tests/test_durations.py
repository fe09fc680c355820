"""Human-readable durations and rates (pure: no database)."""

import pytest

from flowpilot_analytics.durations import NO_VALUE, human_duration, percent


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, NO_VALUE),
        (0, "0s"),
        (0.0, "0s"),
        (0.0004, "<0.1s"),
        (0.05, "0.1s"),
        (4.26, "4.3s"),  # one decimal below ten seconds
        (9.94, "9.9s"),
        (9.95, "10s"),
        (42, "42s"),
        (59.4, "59s"),
        (59.5, "1m 00s"),  # halves round up, and never "60s"
        (245.12, "4m 05s"),
        (3599.4, "59m 59s"),
        (3599.6, "1h 00m"),  # not "59m 60s"
        (7380, "2h 03m"),
        (86_369, "23h 59m"),
        (86_400, "1d 00h"),
        (273_600, "3d 04h"),
        (90 * 86_400, "90d 00h"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("bad", [-0.001, -60])
def test_negative_durations_are_refused(bad):
    with pytest.raises(ValueError, match="negative"):
        human_duration(bad)


@pytest.mark.parametrize("bad", ["60", True, float("nan")])
def test_non_numbers_are_refused(bad):
    with pytest.raises(TypeError):
        human_duration(bad)


@pytest.mark.parametrize(
    ("numerator", "denominator", "text"),
    [
        (37, 42, "88.0%"),
        (42, 42, "100.0%"),
        (9_999, 10_000, "99.9%"),  # truncated: 100.0% only when every one acted
        (1, 10_000, "0.0%"),
        (0, 5, "0.0%"),
        (0, 0, NO_VALUE),
    ],
)
def test_percent(numerator, denominator, text):
    assert percent(numerator, denominator) == text
