"""
Reads of the business-hours calendars, and the clock a request's figures are taken on.

The API, the dashboard, the report and the admin widget name a clock
(``calendar`` or ``business``); :func:`clock_choice` reads the calendars it
needs once (three queries whatever their size, none for the calendar clock), and
:meth:`ClockChoice.for_window` makes the clock of one window: the calendar clock,
or a :class:`~flowpilot_analytics.clocks.BusinessClock` with each account's open
periods from the window's start to a while after now.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Model

from .business_hours import Schedule
from .clocks import BUSINESS_CLOCK, BUSINESS_PERIODS_BEYOND_NOW, CALENDAR, CALENDAR_CLOCK, CLOCKS, BusinessClock
from .models import BusinessCalendar, BusinessInterval, ClosedDate


class NoBusinessCalendar(ValueError):
    """The business clock was asked for an account without a business-hours calendar."""

    def __init__(self, account_ids):
        self.account_ids = tuple(account_ids)
        super().__init__(
            "clock: business needs a business-hours calendar, and account "
            f"{', '.join(map(str, self.account_ids))} has none"
        )


def business_schedules(account_ids):
    """``{account id: Schedule}`` of the accounts among ``account_ids`` with a calendar (three queries at most)."""
    calendars, zones = {}, {}
    for pk, account_id, time_zone in BusinessCalendar.objects.filter(
        account_id__in=list(account_ids)
    ).values_list("pk", "account_id", "time_zone"):
        calendars[pk], zones[pk] = account_id, time_zone
    if not calendars:
        return {}
    intervals = {pk: [] for pk in calendars}
    closed = {pk: set() for pk in calendars}
    for pk, weekday, opens, closes in BusinessInterval.objects.filter(calendar_id__in=list(calendars)).values_list(
        "calendar_id", "weekday", "opens", "closes"
    ):
        intervals[pk].append((weekday, opens, closes))
    for pk, day in ClosedDate.objects.filter(calendar_id__in=list(calendars)).values_list("calendar_id", "date"):
        closed[pk].add(day)
    return {
        account_id: Schedule(zones[pk], tuple(sorted(intervals[pk])), frozenset(closed[pk]))
        for pk, account_id in calendars.items()
    }


@dataclass(frozen=True)
class ClockChoice:
    """A clock by name, with the schedules of its accounts when it is the business clock."""

    name: str = CALENDAR_CLOCK
    schedules: dict = field(default_factory=dict)
    # The clocks already made, by (start, end): a request's faces share one window's periods.
    _clocks: dict = field(default_factory=dict, compare=False, repr=False)

    def for_window(self, window, *, now):
        """The clock measuring the lags of ``window``'s claims (their first actions up to a while after now)."""
        if self.name == CALENDAR_CLOCK:
            return CALENDAR
        end = max(now, window.end) + BUSINESS_PERIODS_BEYOND_NOW
        start = window.start - timedelta(days=1)
        if (start, end) not in self._clocks:
            self._clocks[start, end] = BusinessClock(
                periods={
                    account_id: schedule.periods(start, end) for account_id, schedule in self.schedules.items()
                },
                base=start,
            )
        return self._clocks[start, end]


CALENDAR_CHOICE = ClockChoice()


def clock_choice(clock, accounts=()):
    """The :class:`ClockChoice` of ``clock`` (a name, ``None`` for the calendar's, or a ClockChoice).

    The business clock reads the calendars of ``accounts`` (accounts or ids):
    :class:`NoBusinessCalendar` when one has none.
    """
    if isinstance(clock, ClockChoice):
        return clock
    if clock in (None, CALENDAR_CLOCK):
        return CALENDAR_CHOICE
    if clock != BUSINESS_CLOCK:
        raise ValueError(f"clock: unknown clock {clock!r}; allowed: {', '.join(CLOCKS)}")
    account_ids = [account_id_of(account) for account in accounts]
    schedules = business_schedules(account_ids)
    missing = [account_id for account_id in account_ids if account_id not in schedules]
    if missing:
        raise NoBusinessCalendar(missing)
    return ClockChoice(BUSINESS_CLOCK, schedules)


def account_id_of(account):
    """An account's id, from the account or its id."""
    return account.pk if isinstance(account, Model) else int(account)
