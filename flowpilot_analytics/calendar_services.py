"""
Writes of the business-hours calendars: validated, whole, atomic.

The admin (its forms), the ``import_business_hours`` command and ``seed_demo``
write calendars; the rules are the contract's ("Business hours"): an IANA time
zone, ``opens < closes`` (or ``closes = 00:00``, the end of the day), no two
intervals of a weekday overlapping, one calendar per account.
"""

from django.core.exceptions import ValidationError
from django.db import transaction

from .business_hours import WEEKDAYS, interval_error, overlapping_intervals
from .models import BusinessCalendar, BusinessInterval, ClosedDate, validate_time_zone


def describe_interval(interval):
    weekday, opens, closes = interval
    return f"{WEEKDAYS[weekday]} {opens:%H:%M}-{closes:%H:%M}"


def overlap_messages(intervals):
    """A message per pair of ``(weekday, opens, closes)`` that overlap on their day."""
    return [
        f"{describe_interval(first)} overlaps {describe_interval(second)}"
        for first, second in overlapping_intervals(intervals)
    ]


def schedule_errors(*, time_zone, intervals):
    """Every reason ``time_zone`` and ``intervals`` are not a calendar (empty when they are)."""
    errors = []
    try:
        validate_time_zone(time_zone)
    except ValidationError as error:
        errors.extend(error.messages)
    for interval in intervals:
        weekday, opens, closes = interval
        if weekday not in range(7):
            errors.append(f"weekday {weekday!r}: 0 (Monday) to 6 (Sunday)")
        elif interval_error(opens, closes):
            errors.append(f"{describe_interval(interval)}: closes must be after opens (or 00:00)")
    errors.extend(overlap_messages([i for i in intervals if i[0] in range(7) and not interval_error(i[1], i[2])]))
    return errors


@transaction.atomic
def business_calendar_replace(*, account, time_zone, intervals=(), closed_dates=()):
    """The account's calendar, made or replaced by this one (its intervals and closed dates too).

    ``ValidationError`` listing every problem, and nothing written, when it is not valid.
    """
    intervals = [tuple(interval) for interval in intervals]
    errors = schedule_errors(time_zone=time_zone, intervals=intervals)
    if errors:
        raise ValidationError(errors)
    calendar, _ = BusinessCalendar.objects.update_or_create(account=account, defaults={"time_zone": time_zone})
    calendar.intervals.all().delete()
    calendar.closed_dates.all().delete()
    BusinessInterval.objects.bulk_create(
        BusinessInterval(calendar=calendar, weekday=weekday, opens=opens, closes=closes)
        for weekday, opens, closes in intervals
    )
    ClosedDate.objects.bulk_create(ClosedDate(calendar=calendar, date=day) for day in sorted(set(closed_dates)))
    return calendar
