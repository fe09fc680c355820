"""The server-drawn SVG sparkline (pure: no database)."""

import re
import xml.etree.ElementTree as ET

import pytest

from flowpilot_analytics.charts import daily_series_svg

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
