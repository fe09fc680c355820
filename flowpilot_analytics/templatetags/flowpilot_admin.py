"""
Template tags of the admin summary widget: the widget itself, and filters over pure functions.

``{% escalation_summary_widget %}`` shows the widget wherever a host puts it (its
admin index, typically: README, "The admin summary widget"), to the staff who may
view the escalation summary page, and to no one else.
"""

from django import template
from django.utils.safestring import mark_safe

from ..admin_widget import escalation_summary_context, may_view_escalation_summary
from ..charts import daily_series_svg
from ..durations import human_duration as _human_duration
from ..durations import percent
from ..figures import MEDIAN
from ..overview import ATTENTION_PERIOD

register = template.Library()

# The sparkline's width (its viewBox): scaled down to 150 pixels on a narrow screen, its dates stay legible.
CHART_WIDTH = 180


@register.inclusion_tag("admin/flowpilot_analytics/escalation_summary_widget.html", takes_context=True)
def escalation_summary_widget(context):
    """Every account's figures, computed (in the cross-account mode) only for staff allowed to see them."""
    request = context.get("request")
    if request is None or not may_view_escalation_summary(request.user):
        return {}
    return escalation_summary_context()


@register.filter
def human_duration(seconds):
    """``245.12`` → ``4m 05s``; ``None`` → ``—``."""
    return _human_duration(seconds)


@register.filter
def percent_of(numerator, denominator):
    """``{{ with_action|percent_of:claimed }}`` → ``88.0%``."""
    return percent(numerator, denominator)


@register.filter
def daily_median_chart(summary):
    """The inline SVG sparkline of an ``AccountSummary``'s daily medians."""
    reference = MEDIAN.of(summary.for_period(ATTENTION_PERIOD))
    days = len(summary.daily_median_seconds or ())
    svg = daily_series_svg(
        summary.daily_median_seconds or (),
        label=f"{summary.name}: daily median seconds to first action, last {days} days",
        reference=reference,
        reference_label=f"{ATTENTION_PERIOD} median: {_human_duration(reference)}",
        # Dated axis, and each day's count of handoffs in its tooltip (a median of two is no trend).
        dates=summary.daily_dates[-days:] if summary.daily_dates and days else None,
        counts=summary.daily_handoffs,
        width=CHART_WIDTH,
    )
    # daily_series_svg escapes every text it embeds (the account name included).
    return mark_safe(svg)
