"""Server-drawn SVG charts (pure): the admin widget's sparkline, the dashboard's trend and distribution."""

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from flowpilot_analytics.charts import (
    THIN_POINT_HANDOFFS,
    DistributionBar,
    TrendPoint,
    compact_duration,
    daily_series_svg,
    day_month,
    distribution_chart_svg,
    label_indexes,
    lag_axis,
    trend_chart_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup):
    return ET.fromstring(markup)


def points(root):
    return [
        [tuple(float(n) for n in pair.split(",")) for pair in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    ]


def test_is_well_formed_svg_with_an_accessible_label():
    root = parse(daily_series_svg([10.0, 20.0, 30.0], label="Acme: daily median"))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Acme: daily median"
    assert root.find(f"{SVG}title").text == "Acme: daily median"


def test_no_script_no_external_reference():
    markup = daily_series_svg([1.0, None, 3.0], label="x", reference=2.0)
    assert "<script" not in markup
    assert not re.search(r"(href|src)=", markup)


def test_one_line_from_left_to_right_oldest_first_scaled_from_zero():
    root = parse(daily_series_svg([0.0, 50.0, 100.0], label="x", width=100, height=40))
    [line] = points(root)
    xs = [x for x, _ in line]
    ys = [y for _, y in line]
    assert xs == sorted(xs) and xs[0] < 10 and xs[-1] > 90
    # Larger values are higher up (smaller y); zero sits on the baseline.
    assert ys[0] > ys[1] > ys[2]
    baseline = float(root.find(f"{SVG}line").get("y1"))
    assert ys[0] == baseline


def test_missing_days_break_the_line_but_keep_their_dots():
    root = parse(daily_series_svg([1.0, 2.0, None, 4.0, 5.0, None, 7.0], label="x"))
    assert [len(segment) for segment in points(root)] == [2, 2, 1]
    dots = list(root.iter(f"{SVG}circle"))
    assert len(dots) == 5
    assert dots[-1].find(f"{SVG}title").text == "last 24 h: 7.0s"
    assert dots[0].find(f"{SVG}title").text == "6\u20137 days ago: 1.0s"


def test_reference_line_and_maximum_label():
    root = parse(
        daily_series_svg([60.0, 120.0], label="x", reference=90.0, reference_label="30d median: 1m 30s")
    )
    reference = root.find(f"{SVG}line[@class='fp-reference']")
    assert reference.find(f"{SVG}title").text == "30d median: 1m 30s"
    assert root.find(f"{SVG}text[@class='fp-max']").text == "max 2m 00s"


def test_no_values_says_so():
    root = parse(daily_series_svg([None] * 30, label="x"))
    assert root.find(f"{SVG}text[@class='fp-empty']").text == "no data"
    assert not points(root)


def test_text_is_escaped():
    markup = daily_series_svg([1.0], label='<script>alert("x")</script> & "co"')
    assert "<script>" not in markup
    assert parse(markup).get("aria-label") == '<script>alert("x")</script> & "co"'


def test_single_value_is_centred():
    root = parse(daily_series_svg([5.0], label="x", width=100))
    assert points(root) == [[(50.0, pytest.approx(12.0))]]


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        daily_series_svg([1.0], label="x", width=0)


# --- The dashboard's trend and distribution charts ------------------------------------------------


def trend(values, *, start=date(2026, 10, 26), with_action=12, **kwargs):
    points = [
        TrendPoint(start + timedelta(days=index), value, with_action + 2, 0 if value is None else with_action)
        for index, value in enumerate(values)
    ]
    title = "Median <lag> & more"
    return parse(trend_chart_svg(points, chart_id="t", title=title, description="Per day.", **kwargs))


def texts(root, css_class):
    return [element.text for element in root.iter(f"{SVG}text") if element.get("class") == css_class]


def test_the_trend_names_itself_for_screen_readers():
    root = trend([60.0, 90.0])
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "t-title t-desc"
    assert root.find(f"{SVG}title").get("id") == "t-title"
    assert root.find(f"{SVG}title").text == "Median <lag> & more"
    assert root.find(f"{SVG}desc").text == "Per day."


def test_the_trends_axis_labels_carry_day_and_month_and_the_last_day_is_labelled():
    root = trend([60.0] * 31)
    labels = texts(root, "fp-date")
    assert labels[-1] == "25 Nov"
    assert all(re.fullmatch(r"\d{1,2} (Oct|Nov)", label) for label in labels)
    assert 4 <= len(labels) <= 8


def test_a_window_over_new_year_writes_the_year_on_the_dates():
    labels = texts(trend([60.0] * 20, start=date(2026, 12, 20)), "fp-date")
    assert labels[0].endswith("2026") and any(label.endswith("2027") for label in labels)


def test_weeks_are_labelled_by_their_monday():
    points = [TrendPoint(date(2026, 11, 2) + timedelta(weeks=index), 60.0, 30, 28) for index in range(3)]
    root = parse(trend_chart_svg(points, chart_id="w", title="x", description="y", interval="week"))
    assert texts(root, "fp-date") == ["2 Nov", "9 Nov", "16 Nov"]
    assert "week of 2 Nov 2026: 1m 00s (28 of 30 handoffs with an action)" in [
        element.text for element in root.iter(f"{SVG}title")
    ]


def test_a_point_resting_on_few_handoffs_is_hollow_and_its_lines_dashed():
    points = [
        TrendPoint(date(2026, 11, 1), 60.0, 20, 20),
        TrendPoint(date(2026, 11, 2), 300.0, 3, THIN_POINT_HANDOFFS - 2),
        TrendPoint(date(2026, 11, 3), 70.0, 25, 24),
        TrendPoint(date(2026, 11, 4), 65.0, 25, 24),
    ]
    root = parse(trend_chart_svg(points, chart_id="t", title="x", description="y"))
    circles = list(root.iter(f"{SVG}circle"))
    fills = [circle.get("fill") for circle in circles]
    assert fills == ["currentColor", "none", "currentColor", "currentColor"]
    assert circles[1].find(f"{SVG}title").text == (
        "Mon 2 Nov 2026: 5m 00s (3 of 3 handoffs with an action), too few to read as a trend"
    )
    lines = [line for line in root.iter(f"{SVG}line") if "fp-line" in line.get("class", "")]
    assert [line.get("stroke-dasharray") for line in lines] == ["3 3", "3 3", None]


def test_every_bucket_has_a_bar_with_its_counts_and_days_without_action_are_gaps():
    root = trend([60.0, None, 90.0, 80.0])
    bars = [group for group in root.iter(f"{SVG}g") if group.get("class") == "fp-bar"]
    assert [group.find(f"{SVG}title").text for group in bars] == [
        "Mon 26 Oct 2026: 12 of 14 handoffs with an action",
        "Tue 27 Oct 2026: 0 of 14 handoffs with an action",
        "Wed 28 Oct 2026: 12 of 14 handoffs with an action",
        "Thu 29 Oct 2026: 12 of 14 handoffs with an action",
    ]
    assert len(list(root.iter(f"{SVG}circle"))) == 3
    assert len([line for line in root.iter(f"{SVG}line") if "fp-line" in line.get("class", "")]) == 1
    # Few buckets: each bar's count is written on the chart.
    assert texts(root, "fp-count") == ["14", "14", "14", "14"]


def test_larger_lags_are_higher_and_the_axis_starts_at_zero():
    root = trend([30.0, 120.0])
    first, second = (float(circle.get("cy")) for circle in root.iter(f"{SVG}circle"))
    assert second < first
    assert texts(root, "fp-tick")[0] == "0"


def test_a_trend_without_any_action_says_so():
    root = trend([None, None, None])
    assert texts(root, "fp-empty") == ["no handoff with an action in this window"]
    assert not list(root.iter(f"{SVG}circle"))


def test_axis_helpers():
    assert day_month(date(2026, 3, 1)) == "1 Mar"
    assert day_month(date(2026, 3, 1), year=True) == "1 Mar 2026"
    assert [compact_duration(s) for s in (0, 45, 60, 150, 3600, 5400, 172800)] == [
        "0", "45s", "1m", "2m 30s", "1h", "1h 30m", "2d"
    ]
    assert lag_axis(61.6) == (90, 30)
    assert lag_axis(0) == (1, 1)
    assert lag_axis(7000) == (7200, 1800)
    assert label_indexes(31) == {30, 26, 22, 18, 14, 10, 6, 2}
    assert label_indexes(3) == {0, 1, 2}


def test_the_distribution_writes_each_bucket_its_count_and_share():
    bars = [
        DistributionBar("under 1 min", 3), DistributionBar("1\u20135 min", 1), DistributionBar("over 24 h", 0)
    ]
    root = parse(distribution_chart_svg(bars, chart_id="d", title="Lags", description="By range."))
    assert root.get("aria-labelledby") == "d-title d-desc"
    assert texts(root, "fp-bucket-label") == ["under 1 min", "1\u20135 min", "over 24 h"]
    assert texts(root, "fp-bucket-count") == ["3 (75%)", "1 (25%)", "0 (0%)"]
    rects = [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "fp-bucket-bar"]
    widths = [float(rect.get("width")) for rect in rects]
    assert widths[0] == pytest.approx(3 * widths[1], abs=0.2)
    nothing = [DistributionBar("under 1 min", 0)]
    empty = parse(distribution_chart_svg(nothing, chart_id="e", title="x", description="y"))
    assert texts(empty, "fp-bucket-count") == ["0 (\u2014)"]


def test_a_dated_sparkline_has_dates_on_its_axis_and_counts_in_its_tooltips():
    from datetime import date as _date

    dates = [_date(2026, 11, 8 + index) for index in range(3)]
    root = parse(daily_series_svg([10.0, None, 65.0], label="x", dates=dates, counts=[1, 0, 12]))
    labels = [text.text for text in root.iter(f"{SVG}text") if text.get("class") == "fp-date"]
    assert labels == ["8 Nov", "9 Nov", "10 Nov"]
    tooltips = [circle.find(f"{SVG}title").text for circle in root.iter(f"{SVG}circle")]
    assert tooltips == [
        "8 Nov 2026 (2\u20133 days ago): 10s, 1 handoff with action",
        "10 Nov 2026 (last 24 h): 1m 05s, 12 handoffs with action",
    ]
    assert root.get("height") == "68"  # the dates' line below the plot
