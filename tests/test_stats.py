"""Pure statistics and the figures made from them, checked against NumPy's percentile with no database."""

from datetime import datetime, timedelta, timezone

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowpilot_analytics.clocks import CALENDAR
from flowpilot_analytics.figures import summarize_lags
from flowpilot_analytics.stats import mean_seconds, percentile, to_seconds

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def bucket_counts(summary):
    return tuple(bucket["count"] for bucket in summary.distribution)


lags = st.lists(st.integers(min_value=0, max_value=30 * 86_400 * 1_000_000), max_size=300)


def test_lag_is_exact_in_microseconds_across_days():
    assert CALENDAR.lag_us(T0, T0 + timedelta(days=2, seconds=3, microseconds=7)) == 172_803_000_007


def test_lag_without_action_is_none():
    assert CALENDAR.lag_us(T0, None) is None


def test_negative_lag_is_floored_at_zero():
    assert CALENDAR.lag_us(T0, T0 - timedelta(seconds=5)) == 0


def test_no_values_gives_nulls():
    summary = summarize_lags(3, [])
    assert (summary.n_handoffs_claimed, summary.n_handoffs_with_action) == (3, 0)
    assert (
        summary.avg_seconds_to_first_action
        is summary.median_seconds_to_first_action
        is summary.p95_seconds_to_first_action
        is None
    )


def test_one_value_is_every_statistic():
    summary = summarize_lags(1, [12_345_678])
    assert (
        summary.avg_seconds_to_first_action
        == summary.median_seconds_to_first_action
        == summary.p95_seconds_to_first_action
        == 12.346
    )


def test_known_percentiles_interpolate_between_ranks():
    # 1..20 seconds: median halfway between 10 and 11, p95 at rank 18.05.
    summary = summarize_lags(20, [s * 1_000_000 for s in range(20, 0, -1)])
    assert summary.avg_seconds_to_first_action == 10.5
    assert summary.median_seconds_to_first_action == 10.5
    assert summary.p95_seconds_to_first_action == 19.05


def test_rounding_is_to_milliseconds():
    assert to_seconds(1_234_567) == 1.235
    assert to_seconds(1_234_499) == 1.234
    assert mean_seconds(1, 3) == 0.0


def test_percentile_rejects_fraction_outside_unit_interval():
    with pytest.raises(ValueError):
        percentile([1, 2], 1.5)


@given(values=lags, fraction=st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0]))
def test_percentile_matches_numpy_linear(values, fraction):
    expected = None if not values else float(numpy.percentile(values, fraction * 100))
    got = percentile(sorted(values), fraction)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-6)


@given(values=lags)
def test_summary_matches_a_straightforward_reference(values):
    summary = summarize_lags(len(values) + 2, values)
    assert summary.n_handoffs_with_action == len(values)
    if not values:
        assert summary.avg_seconds_to_first_action is None
        return
    seconds = [v / 1_000_000 for v in values]
    assert summary.avg_seconds_to_first_action == pytest.approx(
        sum(seconds) / len(seconds), abs=0.0005 + 1e-9
    )
    assert summary.median_seconds_to_first_action == pytest.approx(
        float(numpy.median(seconds)), abs=0.0005 + 1e-9
    )
    assert summary.p95_seconds_to_first_action == pytest.approx(
        float(numpy.percentile(seconds, 95)), abs=0.0005 + 1e-9
    )
    assert min(seconds) - 0.0005 <= summary.median_seconds_to_first_action <= max(seconds) + 0.0005


def test_full_distribution_of_known_lags():
    seconds = [30, 59.999, 60, 299, 300, 899, 900, 3599, 3600, 14399, 14400, 86399, 86400, 90000]
    summary = summarize_lags(16, [round(s * 1_000_000) for s in seconds], target_seconds=300)

    assert bucket_counts(summary) == (2, 2, 2, 2, 2, 2, 2)
    assert sum(bucket_counts(summary)) == summary.n_handoffs_with_action == 14
    assert summary.max_seconds_to_first_action == 90000.0
    assert summary.n_handoffs_within_target == 5  # the target is inclusive: 300 s itself meets it
    assert summary.within_target_rate == round(5 / 14, 4)
    assert summary.n_handoffs_without_action == 2
    assert summary.action_rate == 0.875


def test_rates_are_null_without_a_denominator_or_a_target():
    empty = summarize_lags(0, [])
    assert empty.action_rate is None
    assert empty.max_seconds_to_first_action is None and empty.p75_seconds_to_first_action is None
    assert summarize_lags(3, [], target_seconds=0.000001).within_target_rate is None
    assert summarize_lags(3, [5]).within_target_rate is None


@given(values=lags, target=st.integers(min_value=0, max_value=10**12))
def test_extra_percentiles_buckets_and_target_match_a_reference(values, target):
    summary = summarize_lags(len(values), values, target_seconds=target / 1_000_000)
    assert sum(bucket_counts(summary)) == len(values)
    assert summary.n_handoffs_within_target == sum(1 for v in values if v <= target)
    if values:
        seconds = numpy.array(values) / 1_000_000
        assert summary.p75_seconds_to_first_action == pytest.approx(
            float(numpy.percentile(seconds, 75)), abs=0.0005 + 1e-9
        )
        assert summary.p90_seconds_to_first_action == pytest.approx(
            float(numpy.percentile(seconds, 90)), abs=0.0005 + 1e-9
        )
        assert summary.max_seconds_to_first_action == to_seconds(max(values))
        assert (
            summary.median_seconds_to_first_action
            <= summary.p75_seconds_to_first_action
            <= summary.p90_seconds_to_first_action
            <= summary.p95_seconds_to_first_action
        )
