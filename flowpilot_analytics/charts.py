"""
Inline SVG charts drawn on the server: pure functions, no Django.

The admin widget and the dashboard page embed the markup as is: no JavaScript,
no external file, no network access. Every piece of text that goes into the
markup is escaped here, and every number is formatted here, so the result is
safe to mark as HTML. Each chart names itself (``role="img"``, a ``<title>`` and
a ``<desc>``); the page beside it gives the same figures as a table.
"""

import math
from dataclasses import dataclass
from datetime import date
from xml.sax.saxutils import escape, quoteattr

from .durations import human_duration


def _number(value):
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def daily_series_svg(
    values, *, label, reference=None, reference_label="", width=240, height=56, dates=None, counts=None
):
    """A sparkline of one value per day, oldest first, the last 24 hours on the right.

    ``values`` are seconds or ``None`` (no figure that day: a gap in the line).
    ``reference`` (seconds) draws a dashed horizontal line, for instance the
    period's median. Each day is a dot whose tooltip tells its day and value.
    The vertical scale starts at zero and ends at the largest value shown.
    ``dates`` (one per value, the date each 24 hours end on) puts the first, middle
    and last dates under the axis (the chart grows by their line) and in the tooltips;
    ``counts`` (one per value) adds to each tooltip how many handoffs the value rests on.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    values = list(values)
    dates = list(dates) if dates is not None else None
    counts = list(counts) if counts is not None else None
    if dates is not None:
        height += 12
    pad_x, pad_top, pad_bottom = 3.0, 12.0, 3.0 + (12 if dates is not None else 0)
    plot_w = width - 2 * pad_x
    plot_h = height - pad_top - pad_bottom
    shown = [value for value in values if value is not None]
    if reference is not None:
        shown.append(reference)
    top = max(shown, default=0) or 1.0

    def x(index):
        return pad_x + (plot_w * index / (len(values) - 1) if len(values) > 1 else plot_w / 2)

    def y(value):
        return pad_top + plot_h * (1 - value / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fp-chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label={quoteattr(label)}>',
        f"<title>{escape(label)}</title>",
        f'<line class="fp-axis" x1="{_number(pad_x)}" y1="{_number(pad_top + plot_h)}" '
        f'x2="{_number(width - pad_x)}" y2="{_number(pad_top + plot_h)}" stroke="currentColor" '
        f'stroke-opacity="0.3" stroke-width="1"/>',
    ]
    if not [value for value in values if value is not None]:
        parts.append(
            f'<text class="fp-empty" x="{_number(width / 2)}" y="{_number(pad_top + plot_h / 2 + 3)}" '
            f'text-anchor="middle" font-size="10" fill="currentColor" fill-opacity="0.6">no data</text>'
        )
        parts.append("</svg>")
        return "".join(parts)

    parts.append(
        f'<text class="fp-max" x="{_number(width - pad_x)}" y="9" text-anchor="end" font-size="9" '
        f'fill="currentColor" fill-opacity="0.6">max {escape(human_duration(max(shown)))}</text>'
    )
    if dates:
        axis_y = _number(height - 3)
        for index, anchor in ((0, "start"), (len(dates) // 2, "middle"), (len(dates) - 1, "end")):
            at = {"start": pad_x, "middle": x(index), "end": width - pad_x}[anchor]
            parts.append(
                f'<text class="fp-date" x="{_number(at)}" y="{axis_y}" text-anchor="{anchor}" font-size="9" fill="currentColor" fill-opacity="0.7">'
                f"{escape(day_month(dates[index]))}</text>"
            )
    if reference is not None:
        parts.append(
            f'<line class="fp-reference" x1="{_number(pad_x)}" y1="{_number(y(reference))}" '
            f'x2="{_number(width - pad_x)}" y2="{_number(y(reference))}" stroke="currentColor" '
            f'stroke-opacity="0.5" stroke-width="1" stroke-dasharray="3 2">'
            f"<title>{escape(reference_label or human_duration(reference))}</title></line>"
        )
    for segment in _segments(values):
        points = " ".join(f"{_number(x(index))},{_number(y(values[index]))}" for index in segment)
        parts.append(
            f'<polyline class="fp-line" points="{points}" fill="none" stroke="currentColor" '
            f'stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round"/>'
        )
    last = len(values) - 1
    for index, value in enumerate(values):
        if value is None:
            continue
        days_ago = last - index
        when = "last 24 h" if days_ago == 0 else f"{days_ago}\u2013{days_ago + 1} days ago"
        if dates is not None:
            when = f"{day_month(dates[index], year=True)} ({when})"
        text = f"{when}: {human_duration(value)}"
        if counts is not None:
            text += f", {counts[index]} handoff{'' if counts[index] == 1 else 's'} with action"
        parts.append(
            f'<circle class="fp-point" cx="{_number(x(index))}" cy="{_number(y(value))}" r="1.8" '
            f'fill="currentColor"><title>{escape(text)}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _segments(values):
    """Runs of consecutive indexes whose value is not ``None``."""
    run = []
    for index, value in enumerate(values):
        if value is None:
            if run:
                yield run
            run = []
        else:
            run.append(index)
    if run:
        yield run


# --- The dashboard's charts -----------------------------------------------------------------

# A point resting on fewer handoffs with an action than this is drawn hollow and
# faint, its line dashed: a median of three lags is not a trend.
THIN_POINT_HANDOFFS = 5

# Steps of the lag axis, in seconds: the first giving at most four intervals is used.
_LAG_STEPS = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800,
)


@dataclass(frozen=True)
class TrendPoint:
    """One day or week of a trend: its first local day, the lag shown (seconds) and the handoffs behind it."""

    day: date
    seconds: float | None
    n_claimed: int
    n_with_action: int

    @property
    def thin(self):
        return self.n_with_action < THIN_POINT_HANDOFFS


def day_month(day, *, year=False):
    """``3 Nov``, or ``3 Nov 2026``: the date a chart's axis and tooltips carry."""
    text = f"{day.day} {day:%b}"
    return f"{text} {day.year}" if year else text


def compact_duration(seconds):
    """An axis tick: ``0``, ``45s``, ``2m``, ``2m 30s``, ``3h``, ``1h 30m``, ``2d``."""
    seconds = round(seconds)
    if seconds == 0:
        return "0"
    units = ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s"))
    for unit, name, smaller, smaller_name in units:
        if seconds >= unit:
            whole, rest = divmod(seconds, unit)
            rest //= smaller
            return f"{whole}{name}" + (f" {rest}{smaller_name}" if rest else "")
    return f"{seconds}s"


def lag_axis(largest):
    """``(top, step)`` of a lag axis from zero showing ``largest`` seconds, in at most four round steps."""
    largest = max(largest, 1.0)
    for step in _LAG_STEPS:
        if largest / step <= 4:
            return step * math.ceil(largest / step), step
    step = _LAG_STEPS[-1]
    return step * math.ceil(largest / step), step


def label_indexes(count, *, most=8):
    """Which of ``count`` buckets get an axis label: the last (today) and every n-th before it."""
    if count <= 0:
        return set()
    every = max(1, math.ceil(count / most))
    return set(range(count - 1, -1, -every))


def trend_chart_svg(points, *, chart_id, title, description, interval="day", reference=None,
                    reference_label="", width=720, height=290):
    """The dashboard's trend: the lag of each day or week, over bars of the handoffs behind each point.

    ``points`` are :class:`TrendPoint`, oldest first. The upper panel plots
    ``seconds`` (a gap where it is ``None``), the lower one the handoffs claimed
    (darker: those with an action), on the same days; the axis under them labels
    days with day and month. A point resting on fewer than
    :data:`THIN_POINT_HANDOFFS` handoffs with action is hollow and faint and its
    line dashed. ``reference`` (seconds) is a dashed line across, for instance
    the window's own median. Every point and bar has a tooltip with its date and
    counts. ``chart_id`` prefixes the ids ``aria-labelledby`` points at.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    points = list(points)
    left, right, top_pad = 58.0, 16.0, 22.0
    lag_h, gap, count_h, axis_h = height - 118.0, 26.0, 44.0, 26.0
    plot_w = width - left - right
    lag_top, lag_bottom = top_pad, top_pad + lag_h
    count_top = lag_bottom + gap
    count_bottom = count_top + count_h
    n = len(points)
    several_years = len({point.day.year for point in points}) > 1
    every_week = interval == "week"

    def x(index):
        return left + plot_w * (index + 0.5) / n

    shown = [point.seconds for point in points if point.seconds is not None]
    if reference is not None:
        shown.append(reference)
    lag_top_value, lag_step = lag_axis(max(shown, default=0.0))

    def y(seconds):
        return lag_bottom - lag_h * seconds / lag_top_value

    most_claimed = max((point.n_claimed for point in points), default=0) or 1
    # Few buckets: each bar's count is written above it, in room kept for it.
    write_counts = 0 < n <= 16
    bars_h = count_h - 12 if write_counts else count_h

    def bar_y(count):
        return count_bottom - bars_h * count / most_claimed

    def when(point, *, year=True):
        if every_week:
            return f"week of {day_month(point.day, year=year)}"
        return f"{point.day:%a} {day_month(point.day, year=year)}"

    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fp-chart fp-trend-chart" role="img" '
        f'id={quoteattr(chart_id)} width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{escape(title_id)} {escape(desc_id)}">',
        f"<title id={quoteattr(title_id)}>{escape(title)}</title>",
        f"<desc id={quoteattr(desc_id)}>{escape(description)}</desc>",
        f'<text class="fp-panel-label" x="{_number(left)}" y="{_number(lag_top - 9)}" font-size="12" '
        f'fill="currentColor">{escape(title)}</text>',
    ]
    # The lag axis: round steps from zero, a faint rule at each.
    tick = 0
    while tick <= lag_top_value + 1e-9:
        parts.append(
            f'<line class="fp-grid" x1="{_number(left)}" y1="{_number(y(tick))}" '
            f'x2="{_number(width - right)}" y2="{_number(y(tick))}" stroke="currentColor" '
            f'stroke-opacity="{0.35 if tick == 0 else 0.12}" stroke-width="1"/>'
            f'<text class="fp-tick" x="{_number(left - 6)}" y="{_number(y(tick) + 4)}" text-anchor="end" '
            f'font-size="11" fill="currentColor" fill-opacity="0.75">{escape(compact_duration(tick))}</text>'
        )
        tick += lag_step
    if reference is not None:
        parts.append(
            f'<line class="fp-reference" x1="{_number(left)}" y1="{_number(y(reference))}" '
            f'x2="{_number(width - right)}" y2="{_number(y(reference))}" stroke="currentColor" '
            f'stroke-opacity="0.55" stroke-width="1" stroke-dasharray="5 4">'
            f"<title>{escape(reference_label or human_duration(reference))}</title></line>"
        )
    if not shown or reference is not None and len(shown) == 1:
        parts.append(
            f'<text class="fp-empty" x="{_number(left + plot_w / 2)}" y="{_number(lag_top + lag_h / 2)}" '
            f'text-anchor="middle" font-size="12" fill="currentColor" fill-opacity="0.7">'
            f"no handoff with an action in this window</text>"
        )
    # The line, segment by segment: dashed and faint where either end is thin.
    for index in range(n - 1):
        a, b = points[index], points[index + 1]
        if a.seconds is None or b.seconds is None:
            continue
        thin = a.thin or b.thin
        style = ' stroke-width="2"'
        if thin:
            style = ' stroke-width="1.25" stroke-opacity="0.4" stroke-dasharray="3 3"'
        parts.append(
            f'<line class="fp-line{" fp-thin" if thin else ""}" x1="{_number(x(index))}" '
            f'y1="{_number(y(a.seconds))}" x2="{_number(x(index + 1))}" y2="{_number(y(b.seconds))}" '
            f'stroke="currentColor"{style} stroke-linecap="round"/>'
        )
    for index, point in enumerate(points):
        if point.seconds is None:
            continue
        counts = _counts_text(point)
        tooltip = f"{when(point)}: {human_duration(point.seconds)} ({counts})"
        if point.thin:
            tooltip += ", too few to read as a trend"
            parts.append(
                f'<circle class="fp-point fp-thin" cx="{_number(x(index))}" cy="{_number(y(point.seconds))}" '
                f'r="3.5" fill="none" stroke="currentColor" stroke-opacity="0.55" stroke-width="1.5">'
                f"<title>{escape(tooltip)}</title></circle>"
            )
        else:
            parts.append(
                f'<circle class="fp-point" cx="{_number(x(index))}" cy="{_number(y(point.seconds))}" r="4" '
                f'fill="currentColor"><title>{escape(tooltip)}</title></circle>'
            )
    # The handoffs behind each point: claimed (light), with an action (dark).
    parts.append(
        f'<text class="fp-panel-label" x="{_number(left)}" y="{_number(count_top - 7)}" font-size="12" '
        f'fill="currentColor">Handoffs claimed per {"week" if every_week else "day"} '
        f"(dark: with an action)</text>"
        f'<text class="fp-tick" x="{_number(left - 6)}" y="{_number(count_bottom)}" text-anchor="end" '
        f'font-size="11" fill="currentColor" fill-opacity="0.75">0</text>'
        f'<line class="fp-grid" x1="{_number(left)}" y1="{_number(count_bottom)}" '
        f'x2="{_number(width - right)}" y2="{_number(count_bottom)}" stroke="currentColor" '
        f'stroke-opacity="0.35" stroke-width="1"/>'
    )
    if not write_counts:
        # The scale of the bars, when their counts are not written on them.
        parts.append(
            f'<text class="fp-tick" x="{_number(left - 6)}" y="{_number(bar_y(most_claimed) + 9)}" '
            f'text-anchor="end" font-size="11" fill="currentColor" fill-opacity="0.75">'
            f"{most_claimed if points else 0}</text>"
        )
    bar_w = max(1.0, min(28.0, plot_w / max(n, 1) * 0.7))
    for index, point in enumerate(points):
        left_edge = x(index) - bar_w / 2
        tooltip = f"{when(point)}: {_counts_text(point)}"
        parts.append(f'<g class="fp-bar"><title>{escape(tooltip)}</title>')
        if point.n_claimed:
            parts.append(
                f'<rect class="fp-claimed" x="{_number(left_edge)}" y="{_number(bar_y(point.n_claimed))}" '
                f'width="{_number(bar_w)}" height="{_number(count_bottom - bar_y(point.n_claimed))}" '
                f'fill="currentColor" fill-opacity="0.35"/>'
            )
        if point.n_with_action:
            parts.append(
                f'<rect class="fp-with-action" x="{_number(left_edge)}" '
                f'y="{_number(bar_y(point.n_with_action))}" width="{_number(bar_w)}" '
                f'height="{_number(count_bottom - bar_y(point.n_with_action))}" '
                f'fill="currentColor" fill-opacity="0.75"/>'
            )
        parts.append("</g>")
        if write_counts:
            parts.append(
                f'<text class="fp-count" x="{_number(x(index))}" y="{_number(bar_y(point.n_claimed) - 3)}" '
                f'text-anchor="middle" font-size="10" fill="currentColor">{point.n_claimed}</text>'
            )
    # The date axis: day and month under the labelled buckets (the year too when the window spans two).
    labelled = label_indexes(n)
    for index in sorted(labelled):
        point = points[index]
        text = day_month(point.day, year=several_years and (index == min(labelled) or point.day.month == 1))
        # Centred under its bucket, but never past the chart's edges (about 6.5 units a character).
        half = len(text) * 3.3
        anchor = "end" if x(index) + half > width else "start" if x(index) - half < 0 else "middle"
        text_x = {"end": width - 1, "start": 1, "middle": x(index)}[anchor]
        parts.append(
            f'<line class="fp-grid" x1="{_number(x(index))}" y1="{_number(count_bottom)}" '
            f'x2="{_number(x(index))}" y2="{_number(count_bottom + 4)}" stroke="currentColor" '
            f'stroke-opacity="0.5" stroke-width="1"/>'
            f'<text class="fp-date" x="{_number(text_x)}" y="{_number(count_bottom + 17)}" '
            f'text-anchor="{anchor}" font-size="11" fill="currentColor">{escape(text)}</text>'
        )
    if every_week and n:
        parts.append(
            f'<text class="fp-tick" x="{_number(left - 6)}" y="{_number(count_bottom + 17)}" '
            f'text-anchor="end" font-size="11" fill="currentColor" fill-opacity="0.75">week of</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _counts_text(point):
    plural = "" if point.n_claimed == 1 else "s"
    return f"{point.n_with_action} of {point.n_claimed} handoff{plural} with an action"


@dataclass(frozen=True)
class DistributionBar:
    """One lag bucket: its label (``1–5 min``) and how many handoffs it holds."""

    label: str
    count: int


def distribution_chart_svg(bars, *, chart_id, title, description, width=420, row_height=26):
    """Horizontal bars, one per lag bucket, each with its count and share of the total written beside it."""
    bars = list(bars)
    if width <= 0 or row_height <= 0:
        raise ValueError("width and row_height must be positive")
    label_w, value_w, top_pad = 92.0, 84.0, 6.0
    plot_w = width - label_w - value_w
    height = int(top_pad * 2 + row_height * len(bars))
    total = sum(bar.count for bar in bars)
    most = max((bar.count for bar in bars), default=0) or 1
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fp-chart fp-distribution-chart" role="img" '
        f'id={quoteattr(chart_id)} width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{escape(title_id)} {escape(desc_id)}">',
        f"<title id={quoteattr(title_id)}>{escape(title)}</title>",
        f"<desc id={quoteattr(desc_id)}>{escape(description)}</desc>",
    ]
    for index, bar in enumerate(bars):
        top = top_pad + index * row_height
        middle = top + row_height / 2
        share = f"{100 * bar.count / total:.0f}%" if total else "\u2014"
        length = plot_w * bar.count / most
        parts.append(
            f'<g class="fp-bucket"><title>{escape(f"{bar.label}: {bar.count} ({share})")}</title>'
            f'<text class="fp-bucket-label" x="{_number(label_w - 8)}" y="{_number(middle + 4)}" '
            f'text-anchor="end" font-size="12" fill="currentColor">{escape(bar.label)}</text>'
            f'<rect class="fp-track" x="{_number(label_w)}" y="{_number(top + 4)}" width="{_number(plot_w)}" '
            f'height="{_number(row_height - 8)}" fill="currentColor" fill-opacity="0.06"/>'
        )
        if bar.count:
            parts.append(
                f'<rect class="fp-bucket-bar" x="{_number(label_w)}" y="{_number(top + 4)}" '
                f'width="{_number(max(length, 1.5))}" height="{_number(row_height - 8)}" fill="currentColor" '
                f'fill-opacity="0.75"/>'
            )
        parts.append(
            f'<text class="fp-bucket-count" x="{_number(label_w + plot_w + 8)}" y="{_number(middle + 4)}" '
            f'font-size="12" fill="currentColor">{bar.count} ({share})</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
