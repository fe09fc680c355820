"""
Small inline SVG charts drawn on the server: pure functions, no Django.

The admin widget embeds the markup as is: no JavaScript, no external file, no
network access. Every piece of text that goes into the markup is escaped here,
and every number is formatted here, so the result is safe to mark as HTML.
"""

from xml.sax.saxutils import escape, quoteattr

from .durations import human_duration


def _number(value):
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def daily_series_svg(values, *, label, reference=None, reference_label="", width=240, height=56):
    """A sparkline of one value per day, oldest first, the last 24 hours on the right.

    ``values`` are seconds or ``None`` (no figure that day: a gap in the line).
    ``reference`` (seconds) draws a dashed horizontal line, for instance the
    period's median. Each day is a dot whose tooltip tells its day and value.
    The vertical scale starts at zero and ends at the largest value shown.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    values = list(values)
    pad_x, pad_top, pad_bottom = 3.0, 12.0, 3.0
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
        parts.append(
            f'<circle class="fp-point" cx="{_number(x(index))}" cy="{_number(y(value))}" r="1.8" '
            f'fill="currentColor"><title>{escape(when)}: {escape(human_duration(value))}</title></circle>'
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
