"""
Every account at a glance: the figures of each period, a daily series, sorted by attention.

Read by the admin summary widget. The figures come from
:func:`~flowpilot_analytics.selectors.escalation_metrics_by_account` (the API's
own code, one grouped statement per period); the daily series reuses the
selector's handoff queryset and :mod:`~flowpilot_analytics.stats`, so there is
still one definition of a lag and of a median.

"Needs attention" is judged on the 30-day figures: the lowest action rate first
(claimed handoffs nobody acted on are the conversion gap), then the highest p95,
then the highest median; accounts with no claimed handoff in 30 days come last,
shown as such, never hidden.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from .models import Account
from .periods import PERIODS
from .selectors import EscalationMetrics, claimed_handoffs_with_first_action, escalation_metrics_by_account
from .stats import lag_microseconds, percentile, to_seconds

ATTENTION_PERIOD = "30d"
CHART_DAYS = 30
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class AccountSummary:
    """One account's figures for every period, and its daily median lags (oldest first)."""

    account: Account
    figures: tuple[EscalationMetrics, ...]
    daily_median_seconds: tuple[float | None, ...] | None = None

    def for_period(self, period):
        return next(metrics for metrics in self.figures if metrics.period == period)

    @property
    def has_data(self):
        """Whether any handoff was claimed in the longest period."""
        return any(metrics.n_handoffs_claimed for metrics in self.figures)


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


def attention_key(summary):
    """Sort key putting the accounts that most need attention first (see the module docstring)."""
    metrics = summary.for_period(ATTENTION_PERIOD)
    name = (summary.account.name.casefold(), summary.account.pk)
    if not metrics.n_handoffs_claimed:
        return (1, 0.0, 0.0, 0.0, name)
    return (
        0,
        metrics.action_rate,
        -(metrics.p95_seconds_to_first_action or 0.0),
        -(metrics.median_seconds_to_first_action or 0.0),
        name,
    )


def escalation_summary(*, accounts=None, now=None, limit=None):
    """The figures of ``accounts`` (default: all) for every period, sorted by attention.

    A constant number of queries whatever the number of accounts: one to list
    them (when not given), one per period, one for the daily series of the
    (at most ``limit``) accounts shown.
    """
    now = now or timezone.now()
    accounts = list(Account.objects.order_by("name", "pk") if accounts is None else accounts)
    account_ids = [account.pk for account in accounts]
    by_period = {
        period: escalation_metrics_by_account(accounts=account_ids, period=period, now=now)
        for period in PERIODS
    }
    summaries = sorted(
        (
            AccountSummary(
                account=account, figures=tuple(by_period[period][account.pk] for period in PERIODS)
            )
            for account in accounts
        ),
        key=attention_key,
    )
    shown = summaries if limit is None else summaries[:limit]
    series = daily_median_seconds_by_account(
        accounts=[summary.account.pk for summary in shown if summary.has_data], days=CHART_DAYS, now=now
    )
    shown = tuple(
        AccountSummary(
            account=summary.account,
            figures=summary.figures,
            daily_median_seconds=series.get(summary.account.pk),
        )
        for summary in shown
    )
    return EscalationSummary(accounts=shown, total_accounts=len(summaries), now=now)


def daily_median_seconds_by_account(*, accounts, days=CHART_DAYS, now=None):
    """``{account_id: (median lag in seconds or None, ...)}``, one value per 24 hours, oldest first.

    Day ``k`` back holds the handoffs claimed in ``(now - (k+1)×24h, now - k×24h]``
    (the window's first instant goes to the oldest day). One query over the
    handoffs of the window; the medians are the contract's (``stats.percentile``).
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days!r}")
    now = now or timezone.now()
    account_ids = list(accounts)
    lags = defaultdict(lambda: [[] for _ in range(days)])
    if not account_ids:
        return {}
    rows = claimed_handoffs_with_first_action(
        accounts=account_ids, start=now - days * _DAY, end=now
    ).values_list("account_id", "claimed_at", "first_action_at")
    for account_id, claimed_at, first_action_at in rows.iterator(chunk_size=5000):
        lag = lag_microseconds(claimed_at, first_action_at)
        if lag is None:
            continue
        days_ago = min((now - claimed_at) // _DAY, days - 1)
        lags[account_id][days - 1 - days_ago].append(lag)
    # An account without any lag gets its empty days from the defaultdict: all None.
    return {
        account_id: tuple(to_seconds(percentile(sorted(day), 0.5)) for day in lags[account_id])
        for account_id in account_ids
    }
