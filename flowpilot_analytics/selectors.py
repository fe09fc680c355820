"""
Reads of the escalation metric: the handoffs it counts, and the public selectors.

The API, the admin widget and the report command all call these functions, so
they cannot disagree. The rules (docs/metric.md, "Definition"):

* a handoff is in the window when ``start <= claimed_at <= end`` (a period
  ending now) or ``start <= claimed_at < end`` (a custom window, see
  :mod:`flowpilot_analytics.windows`); unclaimed handoffs never are;
* its first action is the earliest step of the same session (and the same
  account) created strictly after ``claimed_at``, found by one correlated
  subquery per handoff;
* the lag is floored at zero and the statistics are taken over the handoffs
  that have an action.

The handoffs are querysets built here; every figure is computed from them by
:func:`flowpilot_analytics.aggregation.aggregate` (one statement on PostgreSQL),
as the spec of :mod:`flowpilot_analytics.figures` declares it.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import DurationField, ExpressionWrapper, F, OuterRef, Subquery
from django.utils import timezone

from .aggregation import Grouping, aggregate
from .clocks import CALENDAR
from .constants import METRIC_DEFINITION
from .figures import BY_NAME, Context, Figures, Lags, summarize
from .models import Account, AiSessionStep, SessionHandoff
from .stats import to_seconds
from .windows import Window, bucket_edges, window_for_period


@dataclass(frozen=True)
class EscalationMetrics:
    """The figures of one account over one window, and the window: the seed schema's ``EscalationMetrics``.

    Each figure reads as an attribute of it (``metrics.<figure name>``);
    ``period`` and ``metric_definition`` complete the envelope of the answer.
    """

    window: Window
    figures: Figures
    metric_definition = METRIC_DEFINITION

    @property
    def period(self):
        return self.window.period_name

    def __getattr__(self, name):
        if name in BY_NAME:
            return getattr(self.figures, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def first_action_subquery():
    """The earliest step after the claim, of the same session and account."""
    steps = AiSessionStep.objects.filter(
        session_id=OuterRef("session_id"),
        # Denormalised, so redundant when the data is sound; kept so that a
        # mis-attributed step of another tenant can never count.
        account_id=OuterRef("account_id"),
        # Strictly after: a step stamped at the claim instant is not an action
        # taken after the claim.
        created_at__gt=OuterRef("claimed_at"),
    )
    return Subquery(steps.order_by("created_at").values("created_at")[:1])


def claimed_handoffs(*, window):
    """Every account's claimed handoffs of the window, annotated ``first_action_at``."""
    # claimed_at in a range implies claimed_at IS NOT NULL, so PostgreSQL can
    # use the partial index on claimed rows.
    end_lookup = "claimed_at__lte" if window.closed else "claimed_at__lt"
    return SessionHandoff.objects.filter(claimed_at__gte=window.start, **{end_lookup: window.end}).annotate(
        first_action_at=first_action_subquery()
    )


def claimed_handoffs_with_first_action(*, accounts, start, end, end_inclusive=True):
    """Claimed handoffs of ``accounts`` (accounts or ids) in the window, annotated ``first_action_at``."""
    window = Window(start=start, end=end, closed=end_inclusive)
    return claimed_handoffs(window=window).filter(
        account_id__in=[_account_id(account) for account in accounts]
    )


def handoffs_in_window(*, account, window):
    """One account's claimed handoffs of a :class:`~flowpilot_analytics.windows.Window`, with ``first_action_at``."""
    return claimed_handoffs(window=window).filter(account_id=_account_id(account))


def escalation_metrics(*, account, period=None, window=None, now=None, target_seconds=None):
    """Every figure of one account over a period ending ``now``, or over ``window``."""
    return escalation_metrics_by_account(
        accounts=[account], period=period, window=window, now=now, target_seconds=target_seconds
    )[_account_id(account)]


def escalation_metrics_by_account(*, accounts=None, period=None, window=None, now=None, target_seconds=None):
    """The figures of many accounts at once, in one query: ``{account_id: EscalationMetrics}``.

    ``accounts`` is an iterable of accounts or ids; ``None`` means every account
    (one extra query to list them). Accounts without data get zero counts.
    Give ``period`` (a window ending ``now``) or ``window``.
    """
    now = now or timezone.now()
    window = window or window_for_period(period, now=now)
    if accounts is None:
        account_ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
    else:
        account_ids = [_account_id(account) for account in accounts]
    if not account_ids:
        return {}
    by_account = aggregate(
        claimed_handoffs(window=window),
        grouping=Grouping(accounts=tuple(account_ids)),
        context=Context(now=now, target_seconds=target_seconds),
    )
    return {
        account_id: EscalationMetrics(window=window, figures=by_account[account_id])
        for account_id in account_ids
    }


def empty_figures(*, now=None, target_seconds=None):
    """The figures of a window (or group) without any claimed handoff."""
    return summarize(Lags(), Context(now=now, target_seconds=target_seconds))


def escalation_trend(*, account, window, interval, now=None):
    """The figures of each local day or week of the window: ``[(range_start, range_end, Figures)]``.

    One query whatever the number of buckets; buckets without handoffs have zero
    counts. The first and last keep their whole range but count only the
    window's claims.
    """
    now = now or timezone.now()
    edges = bucket_edges(window, interval)
    by_bucket = aggregate(
        handoffs_in_window(account=account, window=window),
        grouping=Grouping(bucket_edges=tuple(edges)),
        context=Context(now=now),
    )
    empty = empty_figures(now=now)
    return [
        (start, end, by_bucket.get(index, empty)) for index, (start, end) in enumerate(zip(edges, edges[1:]))
    ]


def escalation_figures_by_day(*, accounts, days, now=None):
    """``{(account_id, day): Figures}`` of the last ``days`` 24-hour days, day 0 the oldest, in one query.

    Day ``days - 1 - k`` holds the handoffs claimed in ``(now - (k+1)×24h, now - k×24h]``
    (the window's first instant goes to the oldest day). Days without handoffs
    are absent.
    """
    now = now or timezone.now()
    window = Window(start=now - timedelta(days=days), end=now, closed=True)
    # Days are closed on the right, buckets on the left; instants are whole
    # microseconds, so (a, b] is [a + 1 µs, b + 1 µs). The first day also takes
    # the window's first instant.
    tick = timedelta(microseconds=1)
    edges = (window.start, *(window.start + timedelta(days=day) + tick for day in range(1, days + 1)))
    return aggregate(
        claimed_handoffs(window=window),
        grouping=Grouping(accounts=tuple(accounts), bucket_edges=edges),
        context=Context(now=now),
    )


# --- Per claimer, and the handoffs themselves ------------------------------------------

DELETED_CLAIMER = "deleted"
DELETED_CLAIMER_NAME = "(deleted user)"


def handoffs_of_claimer(handoffs, claimed_by):
    """``handoffs`` narrowed to one claimer: a user id, ``"deleted"`` (claimer NULL), or ``None`` (all)."""
    if claimed_by is None:
        return handoffs
    if claimed_by == DELETED_CLAIMER:
        return handoffs.filter(claimed_by__isnull=True)
    return handoffs.filter(claimed_by_id=claimed_by)


def claimer_name(first_name, last_name, username):
    """As ``User.get_full_name()``, else the username; the deleted-claimer label without a user."""
    if username is None:
        return DELETED_CLAIMER_NAME
    return f"{first_name} {last_name}".strip() or username


def escalation_metrics_by_engineer(*, account, window, now=None, claimed_by=None):
    """Each claimer's figures over the window: ``[(user id or None, display name, Figures)]``.

    Two queries whatever the number of claimers: the grouped figures, then the
    claimers' names. Claimers without handoffs in the window are absent, except
    ``claimed_by`` when it names an existing user (zero counts). Sorted by name;
    the deleted claimers (one row, id ``None``) last.
    """
    now = now or timezone.now()
    handoffs = handoffs_of_claimer(handoffs_in_window(account=account, window=window), claimed_by)
    grouped = aggregate(handoffs, grouping=Grouping(field="claimed_by_id"), context=Context(now=now))
    # A claimer of the window is named; a user asked for by id only when a member
    # of the account, so that ids of other tenants' users cannot be probed.
    users = get_user_model().objects.filter(pk__in=[key for key in grouped if key is not None])
    if isinstance(claimed_by, int):
        users |= get_user_model().objects.filter(pk=claimed_by, flowpilot_memberships__account=account)
    names = {
        pk: claimer_name(first, last, username)
        for pk, first, last, username in users.values_list("pk", "first_name", "last_name", "username")
    }
    if isinstance(claimed_by, int) and claimed_by in names:
        grouped.setdefault(claimed_by, empty_figures(now=now))
    rows = [
        (key, names[key] if key is not None else DELETED_CLAIMER_NAME, figures)
        for key, figures in grouped.items()
        if key is None or key in names
    ]
    return sorted(rows, key=lambda row: (row[0] is None, row[1].casefold(), row[0] or 0))


def handoffs_with_lag(*, account, window):
    """:func:`handoffs_in_window` annotated ``lag`` (``first_action_at - claimed_at``, NULL without action).

    ``lag`` is for ordering and paging in SQL only: it is positive (the first
    action is strictly after the claim) so it orders exactly as the floored lag
    of :func:`handoff_rows`, which is the one the figures use.
    """
    return handoffs_in_window(account=account, window=window).annotate(
        lag=ExpressionWrapper(F("first_action_at") - F("claimed_at"), output_field=DurationField())
    )


def handoffs_without_action(*, account, window, claimed_by=None):
    """The window's claimed handoffs (of one claimer, or all) still without action, oldest claim first."""
    handoffs = handoffs_of_claimer(handoffs_in_window(account=account, window=window), claimed_by)
    return handoffs.filter(first_action_at__isnull=True).order_by("claimed_at", "id")


HANDOFF_ROW_COLUMNS = (
    "id",
    "session_id",
    "claimed_at",
    "claimed_by_id",
    "claimed_by__first_name",
    "claimed_by__last_name",
    "claimed_by__username",
    "first_action_at",
)


def handoff_rows(handoffs, *, clock=CALENDAR, chunk_size=None):
    """The rows of ``handoffs`` (one query, the claimer joined): dicts with the claimer's name and the lag.

    ``seconds_to_first_action`` is the clock's lag (the one the figures are taken
    over) rounded by :func:`~flowpilot_analytics.stats.to_seconds`, as they are.
    With ``chunk_size`` the rows are fetched that many at a time as they are
    iterated (``QuerySet.iterator()``: a server-side cursor on PostgreSQL, which
    needs the caller's transaction), so memory does not grow with their number.
    """
    rows = handoffs.values(*HANDOFF_ROW_COLUMNS)
    if chunk_size is not None:
        rows = rows.iterator(chunk_size=chunk_size)
    for row in rows:
        yield {
            "id": row["id"],
            "session_id": row["session_id"],
            "claimed_at": row["claimed_at"],
            "claimed_by_id": row["claimed_by_id"],
            "claimed_by_name": claimer_name(
                row["claimed_by__first_name"], row["claimed_by__last_name"], row["claimed_by__username"]
            ),
            "first_action_at": row["first_action_at"],
            "seconds_to_first_action": to_seconds(clock.lag_us(row["claimed_at"], row["first_action_at"])),
        }


def _account_id(account):
    return account.pk if isinstance(account, Account) else int(account)
