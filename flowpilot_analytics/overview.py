"""
Every account at a glance: the figures of each period, a daily series, sorted by attention.

Read by the admin summary widget. The figures come from
:func:`~flowpilot_analytics.selectors.escalation_metrics_by_account` (the API's
own code, one grouped statement per period); the daily series from the same
grouped aggregation, per account and day, so there is one definition of a lag
and of a median.

"Needs attention" is judged on the 30-day figures: the lowest action rate first
(claimed handoffs nobody acted on are the conversion gap), then the highest p95,
then the highest median; accounts with no claimed handoff in 30 days come last,
shown as such, never hidden.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import logging

from django.db import DatabaseError, transaction
from django.utils import timezone

from .calendars import ClockChoice, business_schedules
from .clocks import BUSINESS_CLOCK
from .field_map import NamedAccount, account_order
from .figures import ACTION_RATE, MEDIAN, N_HANDOFFS_CLAIMED, N_HANDOFFS_WITH_ACTION, P95
from .models import get_account_model
from .selectors import EscalationMetrics, escalation_figures_by_day, escalation_metrics_by_account
from .windows import PERIODS

logger = logging.getLogger(__name__)

ATTENTION_PERIOD = "30d"
CHART_DAYS = 30


@dataclass(frozen=True)
class AccountSummary(NamedAccount):
    """One account's figures for every period, and its daily median lags (oldest first)."""

    account: object  # of the account model in use
    figures: tuple[EscalationMetrics, ...]
    daily_median_seconds: tuple[float | None, ...] | None = None
    # The same periods on the business clock, when the account has a business-hours calendar.
    business_figures: tuple[EscalationMetrics, ...] | None = None
    # The handoffs with action behind each daily median, and the date each 24 hours end on (UTC).
    daily_handoffs: tuple[int, ...] | None = None
    daily_dates: tuple[date, ...] | None = None

    def for_period(self, period):
        return next(metrics for metrics in self.figures if metrics.period == period)

    @property
    def rows(self):
        """``(calendar metrics, business metrics or None)`` per period, for the template."""
        business = self.business_figures or (None,) * len(self.figures)
        return tuple(zip(self.figures, business))

    @property
    def has_data(self):
        """Whether any handoff was claimed in the longest period."""
        return any(N_HANDOFFS_CLAIMED.of(metrics) for metrics in self.figures)


@dataclass(frozen=True)
class EscalationSummary:
    """The widget's content: the accounts shown, most in need of attention first."""

    accounts: tuple[AccountSummary, ...]
    total_accounts: int
    now: datetime
    periods: tuple[str, ...] = PERIODS
    attention_period: str = ATTENTION_PERIOD
    chart_days: int = CHART_DAYS

    @property
    def hidden_accounts(self):
        return self.total_accounts - len(self.accounts)


def business_schedules_if_readable(account_ids):
    """The accounts' business-hours calendars, or none when the connection may not read them.

    A host's own cross-account role (``CROSS_ACCOUNT_DB_ALIAS``) may have been granted
    its tables and not the app's calendar tables: the widget then shows the calendar
    clock only, and says why in the log, rather than fail.
    """
    from .models import BusinessCalendar

    try:
        with transaction.atomic(using=BusinessCalendar.objects.db):
            return business_schedules(account_ids)
    except DatabaseError as error:
        logger.warning("The summary widget cannot read the business-hours calendars, so shows no "
                       "business figures (grant SELECT on the app's calendar tables): %s", error)
        return {}


def attention_key(summary):
    """Sort key putting the accounts that most need attention first (see the module docstring)."""
    metrics = summary.for_period(ATTENTION_PERIOD)
    name = (summary.name.casefold(), summary.account.pk)
    if not N_HANDOFFS_CLAIMED.of(metrics):
        return (1, 0.0, 0.0, 0.0, name)
    return (0, ACTION_RATE.of(metrics), -(P95.of(metrics) or 0.0), -(MEDIAN.of(metrics) or 0.0), name)


def escalation_summary(*, accounts=None, now=None, limit=None):
    """The figures of ``accounts`` (default: all) for every period, sorted by attention.

    A constant number of queries whatever the number of accounts: one to list
    them (when not given), one per period, one for the daily series of the
    (at most ``limit``) accounts shown; one for the business-hours calendars,
    and when some account has one, two to read them and one per period for
    those accounts' figures on the business clock.
    """
    now = now or timezone.now()
    if accounts is None:
        accounts = get_account_model()._default_manager.order_by(*account_order(by_name=True))
    accounts = list(accounts)
    account_ids = [account.pk for account in accounts]
    by_period = {
        period: escalation_metrics_by_account(accounts=account_ids, period=period, now=now)
        for period in PERIODS
    }
    schedules = business_schedules_if_readable(account_ids)
    business = {}
    if schedules:
        choice = ClockChoice(BUSINESS_CLOCK, schedules)
        business = {
            period: escalation_metrics_by_account(accounts=list(schedules), period=period, now=now, clock=choice)
            for period in PERIODS
        }
    summaries = sorted(
        (
            AccountSummary(
                account=account,
                figures=tuple(by_period[period][account.pk] for period in PERIODS),
                business_figures=(
                    tuple(business[period][account.pk] for period in PERIODS) if account.pk in schedules else None
                ),
            )
            for account in accounts
        ),
        key=attention_key,
    )
    shown = summaries if limit is None else summaries[:limit]
    series = daily_series_by_account(
        accounts=[summary.account.pk for summary in shown if summary.has_data], days=CHART_DAYS, now=now
    )
    dates = tuple((now - timedelta(days=days_ago)).date() for days_ago in reversed(range(CHART_DAYS)))
    shown = tuple(
        AccountSummary(
            account=summary.account,
            figures=summary.figures,
            daily_median_seconds=series[summary.account.pk][0] if summary.account.pk in series else None,
            daily_handoffs=series[summary.account.pk][1] if summary.account.pk in series else None,
            daily_dates=dates,
            business_figures=summary.business_figures,
        )
        for summary in shown
    )
    return EscalationSummary(accounts=shown, total_accounts=len(summaries), now=now)


def daily_series_by_account(*, accounts, days=CHART_DAYS, now=None):
    """``{account_id: (medians, handoffs with action)}``, one value each per 24 hours, oldest first.

    As :func:`daily_median_seconds_by_account`, with the number of handoffs each median rests on.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days!r}")
    account_ids = list(accounts)
    if not account_ids:
        return {}
    by_day = escalation_figures_by_day(accounts=account_ids, days=days, now=now)
    series = {}
    for account_id in account_ids:
        day_figures = [by_day.get((account_id, day)) for day in range(days)]
        series[account_id] = (
            tuple(MEDIAN.of(figures) if figures else None for figures in day_figures),
            tuple(N_HANDOFFS_WITH_ACTION.of(figures) if figures else 0 for figures in day_figures),
        )
    return series


def daily_median_seconds_by_account(*, accounts, days=CHART_DAYS, now=None):
    """``{account_id: (median lag in seconds or None, ...)}``, one value per 24 hours, oldest first.

    Day ``k`` back holds the handoffs claimed in ``(now - (k+1)×24h, now - k×24h]``
    (the window's first instant goes to the oldest day). One query for every
    account and day (:func:`~flowpilot_analytics.selectors.escalation_figures_by_day`).
    """
    return {
        account_id: medians
        for account_id, (medians, _) in daily_series_by_account(accounts=accounts, days=days, now=now).items()
    }
