"""
The dashboard page: one account's escalation figures, in HTML, for its engineers and admins.

``GET /analytics/flowpilot/escalations/`` (``flowpilot_analytics:escalation-dashboard``),
CONTRACT.md "The dashboard page". Thin, as Zulip's ``/stats`` beside its API: the
account is resolved by the API's own function (:mod:`flowpilot_analytics.api.tenancy`),
the window validated by the API's own query serializer, every figure read from the
selectors the API calls, in the same Row-Level Security transaction (bound to the user,
then to the account); the page is rendered inside that transaction and reads nothing
after it. What differs from the API is only how refusals look: an anonymous visitor is
sent to the host's login page, the others get a page saying why (403, 404), a member of
several accounts without ``account`` gets the list of them, a bad window the form again
with the field's error (400).

The tenancy is the API's, whatever models the host brings: the access policy says which
accounts the user has and in which role, each account is a row of the account model in
use, named through the field map, and read once the transaction is bound to it (a host's
policies may hide an organisation until then). The chooser, which lists accounts before
any is bound, reads them with :func:`~flowpilot_analytics.api.tenancy.memberships_of`.

The figures shown are taken from the spec (:mod:`flowpilot_analytics.figures`): the
cards, the per-engineer columns and the trend table iterate over it; their values
are formatted here, by kind.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.db import OperationalError
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views import View
from rest_framework.exceptions import NotFound, ValidationError

from . import rls
from .access import roles_of
from .admin_widget import may_view_escalation_summary
from .api.serializers import DashboardQuerySerializer
from .api.tenancy import (
    ACCOUNT_PARAM,
    SeveralAccounts,
    account_of,
    claimer_in_scope,
    may_read_analytics,
    membership_for_request,
    memberships_of,
)
from .charts import (
    THIN_POINT_HANDOFFS,
    DistributionBar,
    TrendPoint,
    day_month,
    distribution_chart_svg,
    trend_chart_svg,
)
from .calendars import NoBusinessCalendar, clock_choice
from .conf import app_settings
from .constants import METRIC_DEFINITION
from .durations import NO_VALUE, human_duration
from .figures import (
    ACTION_RATE,
    CONTRACT,
    COUNT,
    COVERAGE,
    DISTRIBUTION,
    MEDIAN,
    RATE,
    SECONDS,
    figure_changes,
    in_sections,
)
from .selectors import (
    escalation_metrics,
    escalation_metrics_by_engineer,
    escalation_trend,
    handoff_rows,
    handoffs_without_action,
)
from .windows import PERIOD_DAYS, PERIODS, zone

logger = logging.getLogger(__name__)

DASHBOARD_TEMPLATE = "flowpilot_analytics/dashboard/escalations.html"
NOTICE_TEMPLATE = "flowpilot_analytics/dashboard/notice.html"

# The query parameters the window form sends (the API's names); an empty field is a field not filled.
FORM_FIELDS = ("period", "start", "end", "time_zone", "interval", "clock")
WINDOW_FIELDS = ("period", "start", "end", "time_zone", "clock")
# The figures of the cards: the contract's seed figures, and the action rate (the conversion signal).
CARD_FIGURES = (*in_sections(CONTRACT), ACTION_RATE)
# The columns of the per-engineer table, and of the trend's table.
ENGINEER_FIGURES = tuple(
    figure for figure in in_sections(CONTRACT, COVERAGE) if figure.kind is not DISTRIBUTION
)
TREND_FIGURES = in_sections(CONTRACT)
# The lag the trend chart plots.
TREND_FIGURE = MEDIAN
# How many claims without action the page lists; the drill-down and its CSV have them all.
WAITING_LIMIT = 50


# --- Values as the page shows them ---------------------------------------------------------------


def figure_text(figure, value):
    """A figure's value as people read it: ``1,237``, ``4m 05s``, ``92.2%``; ``—`` for none."""
    if value is None:
        return NO_VALUE
    if figure.kind is SECONDS:
        return human_duration(value)
    if figure.kind is RATE:
        return f"{100 * value:.1f}%"
    return f"{value:,}"


@dataclass(frozen=True)
class Shown:
    """One figure's value on the page: its text, and the exact value the API gives (``data-value``)."""

    figure: Any
    value: Any

    @property
    def text(self):
        return figure_text(self.figure, self.value)

    @property
    def exact(self):
        """The API's JSON number, for ``data-value``; empty for null."""
        return "" if self.value is None else repr(self.value)

    @property
    def is_lag(self):
        return self.figure.kind is SECONDS

    @property
    def title(self):
        if self.value is None:
            return "no value: no handoff with an action" if self.figure.kind is not COUNT else ""
        if self.figure.kind is SECONDS:
            return f"{self.value:.3f} seconds"
        if self.figure.kind is RATE:
            return f"{self.value:.4f}"
        return ""


@dataclass(frozen=True)
class Card:
    """A seed figure of the window, with the previous window's and the change."""

    current: Shown
    previous: Shown
    change: Any
    previous_span: str

    @property
    def figure(self):
        return self.current.figure

    @property
    def change_exact(self):
        return "" if self.change is None else repr(self.change)

    @property
    def change_text(self):
        kind, change, span = self.figure.kind, self.change, self.previous_span
        if change is None:
            if self.previous.value is None and self.current.value is not None:
                return f"no figure for the previous {span}"
            return ""
        if change == 0:
            return f"same as the previous {span} ({self.previous.text})"
        if kind is SECONDS:
            amount, words = human_duration(abs(change)), ("slower", "faster")
        elif kind is RATE:
            amount, words = f"{100 * abs(change):.1f} points", ("higher", "lower")
        else:
            amount, words = f"{abs(change):,}", ("more", "fewer")
        return (
            f"{amount} {words[0] if change > 0 else words[1]} than the previous {span} ({self.previous.text})"
        )

    @property
    def direction(self):
        """``worse``/``better`` for a lag or rate that moved; ``None`` for counts (neither)."""
        if not self.change:
            return None
        if self.figure.kind is SECONDS:
            return "worse" if self.change > 0 else "better"
        if self.figure.kind is RATE:
            return "better" if self.change > 0 else "worse"
        return None


def span_text(length):
    """How long a window is: ``30 days``, ``1 day``, ``36 hours``."""
    hours = length / timedelta(hours=1)
    if hours % 24 == 0:
        days = int(hours // 24)
        return f"{days} day{'' if days == 1 else 's'}"
    if hours == int(hours):
        return f"{int(hours)} hour{'' if hours == 1 else 's'}"
    return human_duration(length.total_seconds())


def instant_text(instant, tz):
    local = instant.astimezone(tz)
    return f"{day_month(local.date(), year=True)} {local:%H:%M}"


def window_caption(window):
    """The window in words: ``Last 30 days: 25 Oct 2026 02:49 to 24 Nov 2026 02:49 (UTC)``."""
    tz = zone(window.time_zone)
    span = f"{instant_text(window.start, tz)} to {instant_text(window.end, tz)} ({window.time_zone})"
    if window.period:
        return f"Last {PERIOD_DAYS[window.period]} days: {span}"
    return f"{span}, end excluded"


def lag_bucket_label(low, high):
    """``under 1 min``, ``1–5 min``, ``1–4 h``, ``over 24 h``: a lag bucket's edges in seconds, in words."""

    def edge(seconds):
        return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"

    if high is None:
        return f"over {edge(low)}"
    if low == 0:
        return f"under {edge(high)}"
    low_text, high_text = edge(low), edge(high)
    if low_text.split()[1] == high_text.split()[1]:
        return f"{low_text.split()[0]}\u2013{high_text}"
    return f"{low_text}\u2013{high_text}"


# --- The query ----------------------------------------------------------------------------------


def form_query(query_params):
    """The page's query as the API reads it: a form field sent empty is a field not filled."""
    query = query_params.copy()
    for name in FORM_FIELDS:
        values = [value for value in query.getlist(name) if value != ""]
        if values:
            query.setlist(name, values)
        else:
            query.pop(name, None)
    return query


def period_options(chosen):
    """The window menu, ``(value, label, selected)``: the periods, custom dates (and a bad value, to fix)."""
    options = [(period, f"Last {PERIOD_DAYS[period]} days", period == chosen) for period in PERIODS]
    if chosen and chosen not in PERIODS:
        options.append((chosen, f"{chosen} (not a period)", True))
    options.append(("", "Custom: from start to end", not chosen))
    return options


def api_url(name, **params):
    """An endpoint of the API (``escalation-trend``...) with ``params``, ``None`` values left out."""
    query = urlencode({key: value for key, value in params.items() if value is not None})
    return f"{reverse(f'flowpilot_analytics:{name}')}?{query}"


# --- The sections ----------------------------------------------------------------------------------


def bucket_label(start, end, tz, interval):
    """A trend row's heading: ``Mon 2 Nov 2026``, or a week ``2 Nov 2026 – 8 Nov 2026``."""
    first = start.astimezone(tz).date()
    if interval == "week":
        last = (end.astimezone(tz) - timedelta(days=1)).date()
        return f"{day_month(first, year=True)} \u2013 {day_month(last, year=True)}"
    return f"{first:%a} {day_month(first, year=True)}"


def trend_section(buckets, *, metrics, window, interval):
    """The trend's chart and table, from ``escalation_trend``'s buckets."""
    tz = zone(window.time_zone)
    points = [
        TrendPoint(
            start.astimezone(tz).date(),
            TREND_FIGURE.of(figures),
            figures.n_handoffs_claimed,
            figures.n_handoffs_with_action,
        )
        for start, _, figures in buckets
    ]
    rows = [
        {
            "day": point.day,
            "label": bucket_label(start, end, tz, interval),
            "cells": [Shown(figure, figure.of(figures)) for figure in TREND_FIGURES],
            "thin": point.thin,
        }
        for point, (start, end, figures) in zip(points, buckets)
    ]
    unit = "week" if interval == "week" else "day"
    thin = sum(point.thin and point.seconds is not None for point in points)
    whole_window = TREND_FIGURE.of(metrics)
    svg = trend_chart_svg(
        points,
        chart_id="fp-trend-chart",
        title=f"{TREND_FIGURE.label} time to first action per {unit}",
        description=(
            f"{TREND_FIGURE.label} seconds from claim to first action for each {unit} of the window "
            f"({window_caption(window)}), above the number of handoffs claimed that {unit}. {thin} "
            f"point{'' if thin == 1 else 's'} rest on fewer than {THIN_POINT_HANDOFFS} handoffs with an "
            f"action and are drawn hollow. The table after the chart gives every {unit}'s figures."
        ),
        interval=interval,
        reference=whole_window,
        reference_label=f"{TREND_FIGURE.label} of the whole window: {human_duration(whole_window)}",
    )
    return {
        "trend_svg": mark_safe(svg),  # charts.py escapes every text it embeds
        "trend_rows": rows,
        "trend_figures": TREND_FIGURES,
        "trend_label": TREND_FIGURE.label.lower(),
        "trend_title": f"Trend by {interval}",
        "thin_point_handoffs": THIN_POINT_HANDOFFS,
    }


def distribution_section(metrics):
    """The lag distribution's chart and table, from the summary's ``distribution``."""
    bars = [
        DistributionBar(lag_bucket_label(bucket["min_seconds"], bucket["max_seconds"]), bucket["count"])
        for bucket in metrics.distribution
    ]
    svg = distribution_chart_svg(
        bars,
        chart_id="fp-distribution-chart",
        title="Time to first action, by range",
        description=(
            f"How many of the {metrics.n_handoffs_with_action} handoffs with an action waited how long "
            "after the claim: " + "; ".join(f"{bar.label}: {bar.count}" for bar in bars) + "."
        ),
    )
    return {"distribution_svg": mark_safe(svg), "distribution": bars}


def waiting_row(row, *, now, window, account):
    """A claim without action (a ``handoff_rows`` row), with its age and its drill-down link."""
    return dict(
        row,
        waiting=human_duration(max(0.0, (now - row["claimed_at"]).total_seconds())),
        # The drill-down filtered to this claim alone: the window of its claim instant (end excluded).
        drilldown_url=api_url(
            "escalation-handoffs",
            account=account.pk,
            start=row["claimed_at"].isoformat(),
            end=(row["claimed_at"] + timedelta(microseconds=1)).isoformat(),
            time_zone=window.time_zone,
        ),
    )


# --- The view -----------------------------------------------------------------------------------


class EscalationDashboardView(View):
    """The dashboard page of one account (see the module docstring)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            with rls.tenant_transaction():
                rls.bind_user(request.user, statement_timeout_ms=app_settings.STATEMENT_TIMEOUT_MS)
                # Rendered here, inside the transaction bound to the account: nothing is read after it.
                return self.answer(request)
        except OperationalError as exc:
            # A statement timeout, a replica's cancelled read, a lost connection: the transaction
            # was rolled back; say so rather than answer a 500.
            logger.warning("The escalation dashboard could not read its figures: %s", exc)
            response = self.notice(
                request,
                status=503,
                heading="The figures could not be read just now",
                message="The analytics database did not answer in time. Try again in a moment, or choose "
                "a shorter window.",
            )
            response["Retry-After"] = "30"
            return response

    def answer(self, request):
        # The access policy's answer, asked once: the account, the chooser and the switch link use it.
        roles = roles_of(request.user)
        try:
            membership = membership_for_request(user=request.user, query_params=request.GET, roles=roles)
        except SeveralAccounts:
            return self.chooser(request, roles=roles)
        except NotFound:
            return self.no_such_account(request, roles)
        except ValidationError as error:
            messages = error.detail.get(ACCOUNT_PARAM, []) if isinstance(error.detail, dict) else error.detail
            return self.chooser(
                request,
                roles=roles,
                status=400,
                heading="This link names no account",
                message=" ".join(map(str, messages)),
            )
        if not may_read_analytics(membership):
            return self.refused(request, membership, roles)
        try:
            # Bound to the account, then its row read (as the API does).
            membership = account_of(membership)
        except NotFound:
            # The policy names an account that no longer exists.
            rls.unbind_account()
            return self.no_such_account(request, roles)
        account = membership.account

        now = timezone.now()
        query = form_query(request.GET)
        params = DashboardQuerySerializer(query_params=query, context={"now": now})
        context = {
            "request": request,
            "base_template": app_settings.BASE_TEMPLATE,
            "account": account,
            "account_name": membership.name,
            "account_label": membership.label,
            "role": membership.role,
            "several_accounts": len(roles) > 1,
            "form": {name: query.get(name, "") for name in FORM_FIELDS},
            "metric_definition": METRIC_DEFINITION,
            "page_url": request.path,
        }
        errors = None
        if not params.is_valid():
            errors = {
                name: [str(message) for message in messages] for name, messages in params.errors.items()
            }
        else:
            try:
                clock = clock_choice(params.validated_data["clock"], [account])
            except NoBusinessCalendar:
                errors = {"clock": ["This account has no business-hours calendar: choose Calendar."]}
        if errors:
            context["errors"] = errors
            context["period_options"] = period_options(query.get("period", ""))
            context["other_errors"] = [
                f"{name}: {message}"
                for name, messages in errors.items()
                if name not in FORM_FIELDS
                for message in messages
            ]
            return render(request, DASHBOARD_TEMPLATE, context, status=400)

        window, interval = params.validated_data["window"], params.validated_data["interval"]
        context["form"].update(
            period=window.period or "", time_zone=window.time_zone, interval=interval, clock=clock.name
        )
        context["period_options"] = period_options(window.period or "")
        claimer = claimer_in_scope(membership=membership, user=request.user)
        context.update(self.figures(account, window, interval, now, claimer, query, clock))
        # Instants are shown in the window's time zone, as the API writes them.
        with timezone.override(zone(window.time_zone)):
            return render(request, DASHBOARD_TEMPLATE, context)

    def figures(self, account, window, interval, now, claimer, query, clock):
        """Every figure of the page: a constant number of statements, each a selector the API calls.

        ``clock``: the :class:`~flowpilot_analytics.calendars.ClockChoice` of every lag figure.
        """
        metrics = escalation_metrics(account=account, window=window, now=now, clock=clock)
        previous = escalation_metrics(account=account, window=window.previous(), now=now, clock=clock)
        change = figure_changes(metrics, previous)
        buckets = escalation_trend(account=account, window=window, interval=interval, now=now, clock=clock)
        engineers = escalation_metrics_by_engineer(
            account=account, window=window, now=now, claimed_by=claimer, clock=clock
        )
        waiting = handoffs_without_action(account=account, window=window, claimed_by=claimer)
        waiting = list(handoff_rows(waiting[:WAITING_LIMIT], clock=clock.for_window(window, now=now)))

        span = span_text(window.length)
        # The window spelt out, the default period included, so that a link names the window it shows.
        window_params = {name: query.get(name) for name in WINDOW_FIELDS}
        window_params.update(
            account=account.pk, period=window.period, time_zone=window.time_zone, clock=clock.name
        )
        waiting_params = dict(window_params, has_action="false", ordering="claimed_at")
        return {
            "window": window,
            "window_caption": window_caption(window),
            "clock": clock.name,
            "business_time_zone": clock.schedules[account.pk].time_zone if clock.schedules else None,
            "previous_caption": window_caption(window.previous()),
            "interval": interval,
            "now": now,
            "metrics": metrics,
            "cards": [
                Card(
                    current=Shown(figure, figure.of(metrics)),
                    previous=Shown(figure, figure.of(previous)),
                    change=change.get(figure.name),
                    previous_span=span,
                )
                for figure in CARD_FIGURES
            ],
            **trend_section(buckets, metrics=metrics, window=window, interval=interval),
            **distribution_section(metrics),
            "engineer_figures": ENGINEER_FIGURES,
            "engineer_rows": [
                {
                    "id": key,
                    "name": name,
                    "cells": [Shown(figure, figure.of(figures)) for figure in ENGINEER_FIGURES],
                }
                for key, name, figures in engineers
            ],
            "sees_every_claimer": claimer is None,
            "engineers_title": "Per engineer" if claimer is None else "Your own claims",
            "waiting_title": ("Claims" if claimer is None else "Your claims") + " still without an action",
            "waiting_rows": [waiting_row(row, now=now, window=window, account=account) for row in waiting],
            "n_waiting": sum(figures.n_handoffs_without_action for _, _, figures in engineers),
            "waiting_limit": WAITING_LIMIT,
            "csv": {
                "summary": api_url("escalation-metrics", **window_params, compare="previous", format="csv"),
                "trend": api_url("escalation-trend", **window_params, interval=interval, format="csv"),
                "engineers": api_url("escalations-by-engineer", **window_params, format="csv"),
                "waiting": api_url("escalation-handoffs", **waiting_params, format="csv"),
            },
            "waiting_api_url": api_url("escalation-handoffs", **waiting_params),
            "api_url": api_url("escalation-metrics", **window_params, compare="previous"),
        }

    # --- The other answers: the chooser, the refusals -----------------------------------------------

    def notice(self, request, *, status, heading, message, memberships=(), extra=None):
        context = {
            "request": request,
            "base_template": app_settings.BASE_TEMPLATE,
            "heading": heading,
            "message": message,
            "memberships": [
                {
                    "account_id": membership.account_id,
                    "name": membership.name,
                    "role": membership.role,
                    "may_read": may_read_analytics(membership),
                    "url": f"{request.path}?{urlencode({ACCOUNT_PARAM: membership.account_id})}",
                }
                for membership in memberships
            ],
            **(extra or {}),
        }
        return render(request, NOTICE_TEMPLATE, context, status=status)

    def chooser(self, request, *, roles, status=200, heading="Choose an account", message=None):
        # Read before any account is bound: memberships_of() reads each account as its own binding allows.
        memberships = memberships_of(user=request.user, roles=roles)
        if message is None:
            message = "You belong to several accounts. Whose escalations do you want to see?"
        elif memberships:
            message += " Choose one of yours:"
        return self.notice(request, status=status, heading=heading, message=message, memberships=memberships)

    def no_such_account(self, request, roles):
        return self.chooser(
            request,
            roles=roles,
            status=404,
            heading="No such account",
            message="There is no account with this id among yours.",
        )

    def refused(self, request, membership, roles):
        memberships = memberships_of(user=request.user, roles=roles)
        own_id = membership.account_id if membership is not None else None
        others = [other for other in memberships if other.account_id != own_id]
        own = next((other for other in memberships if other.account_id == own_id), None)
        if membership is not None and own is None:
            # The policy names an account that no longer exists.
            return self.no_such_account(request, roles)
        if membership is None:
            # No membership at all (platform staff included): nothing here is about a role in an account.
            message = (
                "Your login is not a member of any FlowPilot account, so there are no escalation figures "
                "to show you here. This page is for the engineers and admins of an account: ask an admin "
                "of yours to add you."
            )
        else:
            message = (
                f"Your role in {own.name} is {membership.role}: its escalation figures are "
                "shown to its engineers and admins. Ask one of its admins if you need them."
            )
        extra = {}
        if may_view_escalation_summary(request.user):
            try:
                extra["staff_summary_url"] = reverse(
                    "admin:flowpilot_analytics_escalationsummarypage_changelist"
                )
            except NoReverseMatch:
                pass
        return self.notice(
            request,
            status=403,
            heading="No escalation figures for you here",
            message=message,
            memberships=others,
            extra=extra,
        )
