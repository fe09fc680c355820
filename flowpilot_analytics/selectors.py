"""
Reads of the escalation metric: the handoffs it counts, and the public selectors.

The API, the admin widget and the report command all call these functions, so
they cannot disagree. The rules (docs/metric.md, "Definition"):

* a handoff is in the window when ``start <= claimed_at <= end`` (a period
  ending now) or ``start <= claimed_at < end`` (a custom window, see
  :mod:`flowpilot_analytics.windows`); unclaimed handoffs never are;
* its first action is the earliest step of the same session (and the same
  account) created strictly after ``claimed_at``, found by one correlated
  subquery per handoff (or read from the first-action index, kept equal to it:
  :mod:`flowpilot_analytics.first_action_index`);
* the lag is floored at zero and the statistics are taken over the handoffs
  that have an action.

The handoffs are querysets built here, of the models in use (the app's, or a
host's: :mod:`flowpilot_analytics.field_map` names their fields), under the
metric's own names (``account_id``, ``session_id``, ``claimed_at``,
``claimed_by_id``); every figure is computed from them by
:func:`flowpilot_analytics.aggregation.aggregate` (one statement on PostgreSQL),
as the spec of :mod:`flowpilot_analytics.figures` declares it.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from itertools import islice

from django.contrib.auth import get_user_model
from django.db.models import BigIntegerField, DurationField, ExpressionWrapper, F, Func, OuterRef, Subquery
from django.utils import timezone

from .access import is_member
from .aggregation import Grouping, aggregate
from .calendars import account_id_of, clock_choice
from .clocks import CALENDAR, CALENDAR_CLOCK
from .constants import METRIC_DEFINITION
from .field_map import field_map
from .first_action_index import handoffs_with_first_action
from .figures import BY_NAME, Context, Figures, Lags, summarize
from .models import get_account_model, get_step_model
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
    clock: str = CALENDAR_CLOCK
    metric_definition = METRIC_DEFINITION

    @property
    def period(self):
        return self.window.period_name

    def __getattr__(self, name):
        if name in BY_NAME:
            return getattr(self.figures, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def first_action_subquery():
    """The earliest step after the claim, of the same session (and account, when steps have one).

    Correlated to a query of handoffs under the metric's names (``session_id``,
    ``account_id``, ``claimed_at``: :func:`~flowpilot_analytics.field_map.all_handoffs`,
    or the app's own handoffs).
    """
    fields = field_map()
    conditions = {fields.step_session: OuterRef("session_id")}
    if fields.step_account is not None:
        # Denormalised, so redundant when the data is sound; kept so that a
        # mis-attributed step of another tenant can never count. Without an
        # account on the step, the session alone scopes it (the handoff's
        # account scopes the window).
        conditions[fields.step_account] = OuterRef("account_id")
    # Strictly after: a step stamped at the claim instant is not an action
    # taken after the claim.
    conditions[f"{fields.step_created_at}__gt"] = OuterRef("claimed_at")
    steps = get_step_model()._default_manager.filter(**conditions)
    return Subquery(steps.order_by(fields.step_created_at).values(fields.step_created_at)[:1])


def claimed_handoffs(*, window):
    """Every account's claimed handoffs of the window, annotated ``first_action_at``."""
    # claimed_at in a range implies claimed_at IS NOT NULL, so PostgreSQL can
    # use the partial index on claimed rows.
    end_lookup = "claimed_at__lte" if window.closed else "claimed_at__lt"
    # The one place first_action_at comes from: probed (the definition), or
    # stored by the first-action index when it is on and ready.
    return handoffs_with_first_action().filter(claimed_at__gte=window.start, **{end_lookup: window.end})


def claimed_handoffs_with_first_action(*, accounts, start, end, end_inclusive=True):
    """Claimed handoffs of ``accounts`` (accounts or ids) in the window, annotated ``first_action_at``."""
    window = Window(start=start, end=end, closed=end_inclusive)
    return claimed_handoffs(window=window).filter(
        account_id__in=[account_id_of(account) for account in accounts]
    )


def handoffs_in_window(*, account, window):
    """One account's claimed handoffs of a :class:`~flowpilot_analytics.windows.Window`, with ``first_action_at``."""
    return claimed_handoffs(window=window).filter(account_id=account_id_of(account))


def escalation_metrics(*, account, period=None, window=None, now=None, target_seconds=None, clock=None):
    """Every figure of one account over a period ending ``now``, or over ``window``, on ``clock``."""
    return escalation_metrics_by_account(
        accounts=[account], period=period, window=window, now=now, target_seconds=target_seconds, clock=clock
    )[account_id_of(account)]


def escalation_metrics_by_account(
    *, accounts=None, period=None, window=None, now=None, target_seconds=None, clock=None
):
    """The figures of many accounts at once, in one query: ``{account_id: EscalationMetrics}``.

    ``accounts`` is an iterable of accounts or ids; ``None`` means every account
    (one extra query to list them). Accounts without data get zero counts.
    Give ``period`` (a window ending ``now``) or ``window``. ``clock``: ``"calendar"``
    (``None``, the default), ``"business"`` (every account needs a calendar:
    :class:`~flowpilot_analytics.calendars.NoBusinessCalendar` otherwise; three
    queries more to read them) or a :class:`~flowpilot_analytics.calendars.ClockChoice`.
    """
    now = now or timezone.now()
    window = window or window_for_period(period, now=now)
    if accounts is None:
        account_ids = list(get_account_model()._default_manager.order_by("pk").values_list("pk", flat=True))
    else:
        account_ids = [account_id_of(account) for account in accounts]
    if not account_ids:
        return {}
    choice = clock_choice(clock, account_ids)
    by_account = aggregate(
        claimed_handoffs(window=window),
        grouping=Grouping(accounts=tuple(account_ids)),
        context=Context(now=now, target_seconds=target_seconds, clock=choice.for_window(window, now=now)),
    )
    return {
        account_id: EscalationMetrics(window=window, figures=by_account[account_id], clock=choice.name)
        for account_id in account_ids
    }


def empty_figures(*, now=None, target_seconds=None):
    """The figures of a window (or group) without any claimed handoff."""
    return summarize(Lags(), Context(now=now, target_seconds=target_seconds))


def escalation_trend(*, account, window, interval, now=None, target_seconds=None, clock=None):
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
        context=Context(
            now=now, target_seconds=target_seconds, clock=clock_choice(clock, [account]).for_window(window, now=now)
        ),
    )
    empty = empty_figures(now=now, target_seconds=target_seconds)
    return [
        (start, end, by_bucket.get(index, empty)) for index, (start, end) in enumerate(zip(edges, edges[1:]))
    ]


def escalation_figures_by_day(*, accounts, days, now=None, clock=None):
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
        context=Context(now=now, clock=clock_choice(clock, accounts).for_window(window, now=now)),
    )


# --- Per claimer, and the handoffs themselves ------------------------------------------

DELETED_CLAIMER = "deleted"
DELETED_CLAIMER_NAME = "(deleted user)"


def handoffs_of_claimer(handoffs, claimed_by):
    """``handoffs`` narrowed to one claimer: a user id, ``"deleted"`` (claimer NULL), or ``None`` (all)."""
    if claimed_by is None:
        return handoffs
    if claimed_by == DELETED_CLAIMER:
        return handoffs.filter(claimed_by_id__isnull=True)
    return handoffs.filter(claimed_by_id=claimed_by)


def display_name(user):
    """A user as the host's user model names them: ``get_full_name()``, else ``get_username()``."""
    get_full_name = getattr(user, "get_full_name", None)
    full_name = get_full_name() if callable(get_full_name) else ""
    return (full_name or "").strip() or user.get_username()


def users_by_id(user_ids):
    """``{user id: user}`` of the users among ``user_ids`` that exist (one query; none when empty)."""
    user_ids = {user_id for user_id in user_ids if user_id is not None}
    if not user_ids:
        return {}
    return {user.pk: user for user in get_user_model()._default_manager.filter(pk__in=user_ids)}


def escalation_metrics_by_engineer(*, account, window, now=None, claimed_by=None, clock=None):
    """Each claimer's figures over the window: ``[(user id or None, display name, Figures)]``.

    Two queries whatever the number of claimers: the grouped figures, then the
    claimers' names (the host's user model's, :func:`display_name`). Claimers
    without handoffs in the window are absent, except ``claimed_by`` when it
    names a member of the account (zero counts): the access policy says who is
    (:func:`~flowpilot_analytics.access.is_member`, a query more with the
    default policy). Sorted by name; the deleted claimers (one row, id ``None``) last.
    """
    now = now or timezone.now()
    handoffs = handoffs_of_claimer(handoffs_in_window(account=account, window=window), claimed_by)
    context = Context(now=now, clock=clock_choice(clock, [account]).for_window(window, now=now))
    grouped = aggregate(handoffs, grouping=Grouping(field="claimed_by_id"), context=context)
    named = isinstance(claimed_by, int) and claimed_by not in grouped
    users = users_by_id([*grouped, *([claimed_by] if named else [])])
    if named and claimed_by in users:
        # A user asked for by id is shown only when a member of the account, so
        # that ids of other tenants' users cannot be probed.
        if is_member(users[claimed_by], account_id_of(account)):
            grouped[claimed_by] = empty_figures(now=now)
        else:
            del users[claimed_by]
    names = {pk: display_name(user) for pk, user in users.items()}
    rows = [
        (key, names[key] if key is not None else DELETED_CLAIMER_NAME, figures)
        for key, figures in grouped.items()
        if key is None or key in names
    ]
    return sorted(rows, key=lambda row: (row[0] is None, row[1].casefold(), row[0] or 0))


def handoffs_with_lag(*, account, window, clock=CALENDAR):
    """:func:`handoffs_in_window` annotated ``lag``: the clock's lag, NULL without action.

    On the calendar clock ``lag`` is ``first_action_at - claimed_at`` (an
    interval): positive (the first action is strictly after the claim), so it
    orders exactly as the floored lag of :func:`handoff_rows`, which is the one
    the figures use. On the business clock it is the business lag itself, whole
    microseconds (:class:`BusinessLag`). For ordering and paging in SQL only.
    """
    if clock.name == CALENDAR_CLOCK:
        lag = ExpressionWrapper(F("first_action_at") - F("claimed_at"), output_field=DurationField())
    else:
        lag = BusinessLag(clock)
    return handoffs_in_window(account=account, window=window).annotate(lag=lag)


class BusinessLag(Func):
    """A business clock's lag of a handoff (microseconds) as a SQL expression of its row.

    PostgreSQL: the clock's own expression over the row's claim and probe (the
    probe fenced so it runs once). SQLite: a function of this process computing
    the Python path's lag (:meth:`~flowpilot_analytics.clocks.BusinessClock.lag_us`).
    """

    output_field = BigIntegerField()

    def __init__(self, clock, **extra):
        super().__init__(F("claimed_at"), F("first_action_at"), **extra)
        self.clock = clock

    def as_sql(self, compiler, connection, **extra_context):
        claimed_sql, claimed_params = compiler.compile(self.source_expressions[0])
        first_sql, first_params = compiler.compile(self.source_expressions[1])
        if connection.vendor == "postgresql":
            lag_sql, lag_params = self.clock.lag_sql()
            periods_sql, periods_params = self.clock.periods_sql()
            sql = (
                f"(SELECT {lag_sql} FROM (SELECT {claimed_sql} AS claimed_at, {first_sql} AS first_action_at "
                f"OFFSET 0) AS handoff {periods_sql})"
            )
            return sql, [*lag_params, *claimed_params, *first_params, *periods_params]
        key = _register_sqlite_clock(connection, self.clock)
        return f"{SQLITE_LAG_FUNCTION}({claimed_sql}, {first_sql}, %s)", [*claimed_params, *first_params, key]


SQLITE_LAG_FUNCTION = "flowpilot_business_lag_us"
_sqlite_clocks = {}


def _register_sqlite_clock(connection, clock):
    """Makes :data:`SQLITE_LAG_FUNCTION` known to the SQLite connection; the key naming ``clock`` to it."""
    key = str(id(clock))
    _sqlite_clocks[key] = clock
    while len(_sqlite_clocks) > 64:
        _sqlite_clocks.pop(next(iter(_sqlite_clocks)))
    connection.ensure_connection()
    connection.connection.create_function(SQLITE_LAG_FUNCTION, 3, _sqlite_business_lag_us, deterministic=True)
    return key


def _sqlite_business_lag_us(claimed_at, first_action_at, key):
    def instant(text):
        return None if text is None else datetime.fromisoformat(text).replace(tzinfo=dt_timezone.utc)

    return _sqlite_clocks[key].lag_us(instant(claimed_at), instant(first_action_at))


def handoffs_without_action(*, account, window, claimed_by=None):
    """The window's claimed handoffs (of one claimer, or all) still without action, oldest claim first."""
    handoffs = handoffs_of_claimer(handoffs_in_window(account=account, window=window), claimed_by)
    return handoffs.filter(first_action_at__isnull=True).order_by("claimed_at", "id")


HANDOFF_ROW_COLUMNS = ("id", "session_id", "claimed_at", "claimed_by_id", "first_action_at")
# Rows read per query of a long drill-down (its CSV): each batch names its new claimers in one more query.
HANDOFF_ROWS_BATCH = 2000


def handoff_rows(handoffs, *, clock=CALENDAR, chunk_size=None):
    """The rows of ``handoffs``: dicts with the claimer's name and the lag.

    A page costs two queries (its rows, then its claimers' names; one without
    claimers); a longer read goes by batches of ``chunk_size`` rows (default
    :data:`HANDOFF_ROWS_BATCH`), each naming
    only claimers not met before (names of the user model in use: a host's own
    ``get_full_name``). The rows are fetched a batch at a time as they are
    iterated (``QuerySet.iterator()``: a server-side cursor on PostgreSQL, which
    needs the caller's transaction), so memory does not grow with their number.
    ``seconds_to_first_action`` is the clock's lag (the one the figures are taken
    over) rounded by :func:`~flowpilot_analytics.stats.to_seconds`, as they are.
    """
    names = {}
    chunk_size = chunk_size or HANDOFF_ROWS_BATCH
    rows = handoffs.values(*HANDOFF_ROW_COLUMNS).iterator(chunk_size=chunk_size)
    while batch := list(islice(rows, chunk_size)):
        new = users_by_id({row["claimed_by_id"] for row in batch} - names.keys())
        names.update((pk, display_name(user)) for pk, user in new.items())
        for row in batch:
            yield {
                **row,
                "claimed_by_name": names.get(row["claimed_by_id"], DELETED_CLAIMER_NAME),
                "seconds_to_first_action": to_seconds(
                    clock.lag_us(row["claimed_at"], row["first_action_at"])
                ),
            }
