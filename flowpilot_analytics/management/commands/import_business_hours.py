"""
``manage.py import_business_hours FILE``: load accounts' business-hours calendars from a JSON or CSV file.

One row per interval or closed date (docs/metric.md, "Business hours"):

* CSV, with a header: ``account,time_zone,weekday,opens,closes,closed_date``;
* JSON: a list of objects with those keys.

A row names its ``account`` (slug or id) and either an interval (``weekday``
0 = Monday ... 6 = Sunday, or its English name; ``opens`` and ``closes`` as
``HH:MM``, ``closes`` ``00:00`` for the end of the day) or a ``closed_date``
(``YYYY-MM-DD``, local). ``time_zone`` (IANA) is needed on at least one row of
each account, and every row giving it must agree. Each account of the file gets
exactly the file's calendar (its previous intervals and closed dates are
replaced); accounts not in the file are left alone. All or nothing: one bad
row, and nothing is written; every bad row is reported with its line.
"""

import csv
import io
import json
import json.scanner
from bisect import bisect_right
from collections import defaultdict
from datetime import date, time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from flowpilot_analytics.business_hours import WEEKDAYS, interval_error
from flowpilot_analytics.calendar_services import business_calendar_replace, describe_interval
from flowpilot_analytics.cross_account import analytics_cross_account
from flowpilot_analytics.field_map import account_label, accounts_named
from flowpilot_analytics.models import validate_time_zone

COLUMNS = ("account", "time_zone", "weekday", "opens", "closes", "closed_date")
LINE = "__line__"
FORMATS = ("json", "csv")


class _LineDecoder(json.JSONDecoder):
    """A JSON decoder that puts the line each object starts on under :data:`LINE`."""

    def __init__(self, text):
        super().__init__()
        starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]
        parse_object = self.parse_object

        def with_line(s_and_end, *args, **kwargs):
            obj, end = parse_object(s_and_end, *args, **kwargs)
            obj[LINE] = bisect_right(starts, s_and_end[1] - 1)
            return obj, end

        self.parse_object = with_line
        self.scan_once = json.scanner.py_make_scanner(self)


def read_rows(text, file_format):
    """``[(line, {column: text})]`` of the file; ``CommandError`` when it is not JSON or CSV of rows."""
    if file_format == "json":
        try:
            data = _LineDecoder(text).decode(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"line {error.lineno}: not JSON: {error.msg}.") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise CommandError("line 1: the JSON must be a list of objects, one per interval or closed date.")
        rows = []
        for item in data:
            line = item.pop(LINE)
            unknown = sorted(set(item) - set(COLUMNS))
            rows.append((line, {key: item.get(key) for key in COLUMNS}, unknown))
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [column for column in ("account",) if column not in header]
    if missing:
        raise CommandError(f"line 1: the header needs the columns {', '.join(COLUMNS)} (missing: account).")
    unknown = sorted(set(header) - set(COLUMNS))
    rows = []
    for row in reader:
        rows.append((reader.line_num, {key: row.get(key) for key in COLUMNS}, unknown))
    return rows


def _text(value):
    if value is None:
        return ""
    return str(value).strip()


def _time(value, name):
    text = _text(value)
    try:
        parsed = time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a time (HH:MM)") from None
    if parsed.tzinfo is not None:
        raise ValueError(f"{name}: give a local time without an offset")
    return parsed


def _weekday(value):
    text = _text(value)
    names = {name.lower(): index for index, name in enumerate(WEEKDAYS)}
    names.update({name[:3].lower(): index for index, name in enumerate(WEEKDAYS)})
    if text.lower() in names:
        return names[text.lower()]
    if text.isdigit() and int(text) in range(7):
        return int(text)
    raise ValueError(f"weekday: {text!r} is not 0 (Monday) to 6 (Sunday) or a day's name")


def parse_row(row):
    """``("interval", (weekday, opens, closes))`` or ``("closed", date)``; ``ValueError`` saying what is wrong."""
    has_interval = any(_text(row[name]) for name in ("weekday", "opens", "closes"))
    has_date = bool(_text(row["closed_date"]))
    if has_interval and has_date:
        raise ValueError("give an interval (weekday, opens, closes) or a closed_date, not both")
    if has_date:
        try:
            return "closed", date.fromisoformat(_text(row["closed_date"]))
        except ValueError:
            raise ValueError(f"closed_date: {_text(row['closed_date'])!r} is not a date (YYYY-MM-DD)") from None
    if not has_interval:
        if _text(row["time_zone"]):
            return "zone", None
        raise ValueError("give an interval (weekday, opens, closes) or a closed_date")
    missing = [name for name in ("weekday", "opens", "closes") if not _text(row[name])]
    if missing:
        raise ValueError(f"{', '.join(missing)}: missing")
    interval = (_weekday(row["weekday"]), _time(row["opens"], "opens"), _time(row["closes"], "closes"))
    problem = interval_error(interval[1], interval[2])
    if problem:
        raise ValueError(f"closes: {problem}")
    return "interval", interval


def find_accounts(identifiers):
    """``{identifier: account}`` for the slugs or ids that name exactly one account."""
    return {value: next(iter(candidates)) for value, candidates in accounts_named(identifiers).items()
            if len(candidates) == 1}


class Command(BaseCommand):
    help = (
        "Load business-hours calendars (time zone, weekly intervals, closed dates) from a JSON or CSV file: "
        "each account in the file gets exactly its calendar; all or nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The file: .json or .csv (or give --format).")
        parser.add_argument("--format", dest="file_format", choices=FORMATS, help="Default: from the extension.")

    def handle(self, *args, file, file_format, **options):
        path = Path(file)
        file_format = file_format or path.suffix.lower().lstrip(".")
        if file_format not in FORMATS:
            raise CommandError(f"{file}: give a .json or .csv file, or --format json|csv.")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{file}: cannot read it: {error}.") from None
        rows = read_rows(text, file_format)
        if not rows:
            raise CommandError(f"{file}: no rows.")
        with analytics_cross_account() as mode:
            if mode.problem:
                raise CommandError(mode.problem)
            calendars, errors = self.calendars(rows)
            if errors:
                raise CommandError(
                    f"{file}: {len(errors)} bad row{'s' if len(errors) > 1 else ''}, nothing imported:\n"
                    + "\n".join(f"  line {line}: {message}" for line, message in sorted(errors))
                )
            with transaction.atomic():
                for account, calendar in calendars.items():
                    business_calendar_replace(account=account, **calendar)
        for account, calendar in calendars.items():
            self.stdout.write(
                f"{account_label(account)}: {calendar['time_zone']}, {len(calendar['intervals'])} intervals, "
                f"{len(calendar['closed_dates'])} closed dates"
            )
        self.stdout.write(f"Imported the business hours of {len(calendars)} accounts.")

    def calendars(self, rows):
        """``({account: calendar kwargs}, [(line, message)])`` of the file's rows."""
        errors = []
        identifiers = {_text(row["account"]) for _, row, _ in rows} - {""}
        accounts = find_accounts(identifiers)
        zones = defaultdict(dict)  # account -> {zone: first line}
        intervals = defaultdict(list)  # account -> [(line, interval)]
        closed = defaultdict(dict)  # account -> {date: line}
        for line, row, unknown in rows:
            if unknown:
                errors.append((line, f"unknown column {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}"))
                continue
            identifier = _text(row["account"])
            if not identifier:
                errors.append((line, "account: missing (a slug or an id)"))
                continue
            account = accounts.get(identifier)
            if account is None:
                errors.append((line, f"account: no account with the slug or id {identifier!r}"))
                continue
            time_zone = _text(row["time_zone"])
            if time_zone:
                try:
                    validate_time_zone(time_zone)
                except ValidationError as error:
                    errors.append((line, f"time_zone: {error.messages[0]}"))
                    continue
                zones[account].setdefault(time_zone, line)
            try:
                kind, value = parse_row(row)
            except ValueError as error:
                errors.append((line, str(error)))
                continue
            if kind == "interval":
                intervals[account].append((line, value))
            elif kind == "closed":
                if value in closed[account]:
                    errors.append((line, f"closed_date: {value} already given on line {closed[account][value]}"))
                closed[account].setdefault(value, line)
        for account in {*intervals, *closed, *zones}:
            label = account_label(account)
            if not zones[account]:
                first = min([line for line, _ in intervals[account]] + list(closed[account].values()))
                errors.append((first, f"time_zone: missing for account {label} (give it on one of its rows)"))
            elif len(zones[account]) > 1:
                (_, first), *others = sorted(zones[account].items(), key=lambda item: item[1])
                for zone, line in others:
                    errors.append((line, f"time_zone: {zone} differs from line {first}'s for account {label}"))
            errors.extend(self.overlaps(intervals[account]))
        calendars = {
            account: {
                "time_zone": next(iter(zones[account]), ""),
                "intervals": [interval for _, interval in intervals[account]],
                "closed_dates": list(closed[account]),
            }
            for account in {*intervals, *closed, *zones}
        }
        return calendars, errors

    @staticmethod
    def overlaps(lined_intervals):
        from flowpilot_analytics.business_hours import overlapping_intervals

        lines = {}
        for line, interval in lined_intervals:
            lines.setdefault(interval, line)
        errors = []
        for first, second in overlapping_intervals([interval for _, interval in lined_intervals]):
            errors.append(
                (
                    lines[second],
                    f"{describe_interval(second)} overlaps {describe_interval(first)} (line {lines[first]})",
                )
            )
        return errors
