"""The business-hours calendars as data: validation, the admin's forms, import_business_hours, seed_demo (core suite)."""

import io
import json
from datetime import date, time

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from flowpilot_analytics.calendar_services import business_calendar_replace
from flowpilot_analytics.calendars import business_schedules
from flowpilot_analytics.models import BusinessCalendar, BusinessInterval, ClosedDate
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]

NINE_TO_SIX = [(weekday, time(9), time(18)) for weekday in range(5)]


# --- Validation ------------------------------------------------------------------------------


def test_a_calendar_with_every_problem_is_refused_with_every_reason_and_nothing_written(account):
    with pytest.raises(ValidationError) as refused:
        business_calendar_replace(
            account=account,
            time_zone="Mars/Olympus",
            intervals=[(0, time(18), time(9)), (1, time(9), time(12)), (1, time(11), time(14)), (7, time(9), time(10))],
        )
    messages = refused.value.messages
    assert any("Mars/Olympus is not an IANA time zone" in message for message in messages)
    assert "Monday 18:00-09:00: closes must be after opens (or 00:00)" in messages
    assert "Tuesday 09:00-12:00 overlaps Tuesday 11:00-14:00" in messages
    assert any(message.startswith("weekday 7") for message in messages)
    assert not BusinessCalendar.objects.exists()


def test_closes_at_midnight_is_the_end_of_the_day_and_touching_intervals_are_fine(account):
    business_calendar_replace(
        account=account,
        time_zone="Europe/Paris",
        intervals=[(4, time(9), time(12)), (4, time(12), time(18)), (4, time(20), time(0))],
        closed_dates=[date(2026, 12, 25)],
    )
    [schedule] = business_schedules([account.pk]).values()
    assert schedule.intervals == ((4, time(9), time(12)), (4, time(12), time(18)), (4, time(20), time(0)))
    assert schedule.closed_dates == {date(2026, 12, 25)}


def test_one_calendar_per_account_and_replacing_keeps_one(account):
    business_calendar_replace(account=account, time_zone="UTC", intervals=NINE_TO_SIX)
    business_calendar_replace(account=account, time_zone="Asia/Tokyo", intervals=NINE_TO_SIX[:1])
    assert BusinessCalendar.objects.filter(account=account).count() == 1
    assert BusinessInterval.objects.count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        BusinessCalendar.objects.create(account=account, time_zone="UTC")


def test_the_database_refuses_opens_after_closes(account):
    calendar = business_calendar_replace(account=account, time_zone="UTC")
    with pytest.raises(IntegrityError), transaction.atomic():
        BusinessInterval.objects.create(calendar=calendar, weekday=0, opens=time(18), closes=time(9))


def test_model_validation_names_the_field(account):
    calendar = BusinessCalendar(account=account, time_zone="Nowhere/Land")
    with pytest.raises(ValidationError) as refused:
        calendar.full_clean()
    assert list(refused.value.message_dict) == ["time_zone"]
    saved = business_calendar_replace(account=account, time_zone="UTC")
    interval = BusinessInterval(calendar=saved, weekday=0, opens=time(10), closes=time(10))
    with pytest.raises(ValidationError) as refused:
        interval.full_clean()
    assert "closes" in refused.value.message_dict


# --- import_business_hours -------------------------------------------------------------------


def run_import(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    out = io.StringIO()
    call_command("import_business_hours", str(path), stdout=out)
    return out.getvalue()


def test_import_csv(tmp_path, account, other_account):
    label, other = MODELS.label(account), MODELS.label(other_account)
    text = (
        "account,time_zone,weekday,opens,closes,closed_date\n"
        f"{label},Europe/Paris,0,09:00,12:30,\n"
        f"{label},,monday,13:30,18:00,\n"
        f"{label},,Fri,20:00,00:00,\n"
        f"{label},,,,,2026-12-25\n"
        f"{other},America/New_York,2,08:00,17:00,\n"
    )
    out = run_import(tmp_path, "hours.csv", text)
    assert "Imported the business hours of 2 accounts." in out
    schedules = business_schedules([account.pk, other_account.pk])
    assert schedules[account.pk].time_zone == "Europe/Paris"
    assert schedules[account.pk].intervals == (
        (0, time(9), time(12, 30)),
        (0, time(13, 30), time(18)),
        (4, time(20), time(0)),
    )
    assert schedules[account.pk].closed_dates == {date(2026, 12, 25)}
    assert schedules[other_account.pk].intervals == ((2, time(8), time(17)),)


def test_import_json_replaces_the_accounts_calendar(tmp_path, account):
    business_calendar_replace(account=account, time_zone="UTC", intervals=NINE_TO_SIX, closed_dates=[date(2026, 1, 1)])
    rows = [
        {"account": MODELS.label(account), "time_zone": "Asia/Tokyo", "weekday": 5, "opens": "10:00", "closes": "14:00"},
    ]
    run_import(tmp_path, "hours.json", json.dumps(rows, indent=2))
    [schedule] = business_schedules([account.pk]).values()
    assert (schedule.time_zone, schedule.intervals, schedule.closed_dates) == (
        "Asia/Tokyo",
        ((5, time(10), time(14)),),
        frozenset(),
    )


def test_import_reports_every_bad_row_with_its_line_and_writes_nothing(tmp_path, account):
    label = MODELS.label(account)
    text = (
        "account,time_zone,weekday,opens,closes,closed_date\n"
        f"{label},Europe/Paris,0,09:00,12:00,\n"  # line 2: fine
        f"{label},,0,11:00,14:00,\n"  # line 3: overlaps line 2
        f"{label},,8,09:00,10:00,\n"  # line 4: no such weekday
        f"{label},,1,18:00,09:00,\n"  # line 5: closes before opens
        "no-such-account,UTC,1,09:00,10:00,\n"  # line 6
        f"{label},Mars/Olympus,2,09:00,10:00,\n"  # line 7
        f"{label},,,,,2026-02-30\n"  # line 8
        f"{label},,3,9 am,10:00,\n"  # line 9
        f"{label},,3,09:00,10:00,2026-12-25\n"  # line 10
        f"{label},America/New_York,4,09:00,10:00,\n"  # line 11: another zone
    )
    with pytest.raises(CommandError) as refused:
        run_import(tmp_path, "hours.csv", text)
    message = str(refused.value)
    assert "nothing imported" in message
    for line in range(3, 12):
        assert f"line {line}: " in message, line
    assert "line 2: " not in message
    assert "line 3: Monday 11:00-14:00 overlaps Monday 09:00-12:00 (line 2)" in message
    assert "no account with the slug or id 'no-such-account'" in message
    assert not BusinessCalendar.objects.exists()
    assert not ClosedDate.objects.exists()


def test_import_json_lines_are_the_objects_lines(tmp_path, account):
    label = MODELS.label(account)
    text = (
        "[\n"
        f'  {{"account": "{label}", "time_zone": "UTC", "weekday": 0, "opens": "09:00", "closes": "18:00"}},\n'
        f'  {{"account": "{label}", "weekday": 0,\n'
        '    "opens": "17:00", "closes": "19:00"},\n'
        f'  {{"account": "{label}", "colour": "blue", "closed_date": "2026-12-25"}}\n'
        "]\n"
    )
    with pytest.raises(CommandError) as refused:
        run_import(tmp_path, "hours.json", text)
    message = str(refused.value)
    assert "line 3: Monday 17:00-19:00 overlaps Monday 09:00-18:00 (line 2)" in message
    assert "line 5: unknown column colour" in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("hours.json", "[{]", "not JSON"),
        ("hours.json", '{"account": "x"}', "must be a list of objects"),
        ("hours.txt", "account\n", "give a .json or .csv file"),
        ("hours.csv", "", "the header needs the columns"),
        ("hours.csv", "account,time_zone,weekday,opens,closes,closed_date\n", "no rows"),
    ],
)
def test_import_refuses_a_file_it_cannot_read(tmp_path, account, name, text, expected):
    with pytest.raises(CommandError, match=expected):
        run_import(tmp_path, name, text)


def test_import_needs_a_time_zone_per_account(tmp_path, account):
    text = f"account,weekday,opens,closes\n{MODELS.label(account)},0,09:00,18:00\n"
    with pytest.raises(CommandError, match="line 2: time_zone: missing"):
        run_import(tmp_path, "hours.csv", text)


# --- The admin's forms (the app's own admin; a host's accounts get a raw id field) -------------


def inline_data(account, time_zone, intervals, closed_dates=()):
    data = {
        "account": account.pk,
        "time_zone": time_zone,
        "intervals-TOTAL_FORMS": len(intervals),
        "intervals-INITIAL_FORMS": 0,
        "closed_dates-TOTAL_FORMS": len(closed_dates),
        "closed_dates-INITIAL_FORMS": 0,
    }
    for index, (weekday, opens, closes) in enumerate(intervals):
        data |= {f"intervals-{index}-weekday": weekday, f"intervals-{index}-opens": opens,
                 f"intervals-{index}-closes": closes}
    for index, day in enumerate(closed_dates):
        data[f"closed_dates-{index}-date"] = day
    return data


ADD_URL = "/admin/flowpilot_analytics/businesscalendar/add/"


def test_the_admin_adds_a_calendar_with_its_intervals_and_closed_dates(admin_client, account):
    response = admin_client.post(
        ADD_URL, inline_data(account, "Europe/Paris", [(0, "09:00", "12:00"), (0, "13:00", "00:00")], ["2026-12-25"])
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    [schedule] = business_schedules([account.pk]).values()
    assert schedule.intervals == ((0, time(9), time(12)), (0, time(13), time(0)))


def test_the_admin_refuses_overlaps_bad_zones_and_reversed_intervals(admin_client, account):
    response = admin_client.post(ADD_URL, inline_data(account, "Europe/Pariss", [(0, "09:00", "12:00"), (0, "11:00", "14:00")]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Europe/Pariss is not an IANA time zone name" in page
    assert "Monday 09:00-12:00 overlaps Monday 11:00-14:00" in page
    response = admin_client.post(ADD_URL, inline_data(account, "UTC", [(2, "18:00", "09:00")]))
    assert response.status_code == 200
    assert "Must be after opens" in response.content.decode()
    assert not BusinessCalendar.objects.exists()


def test_the_admin_lists_calendars(admin_client, account):
    business_calendar_replace(account=account, time_zone="Europe/Paris", intervals=NINE_TO_SIX)
    response = admin_client.get("/admin/flowpilot_analytics/businesscalendar/")
    assert response.status_code == 200
    assert "Europe/Paris" in response.content.decode()


# --- Row-Level Security ------------------------------------------------------------------------


@pytest.mark.postgres_only
def test_the_app_role_sees_only_the_bound_accounts_calendar(account, other_account, become_app_role):
    from flowpilot_analytics import rls

    business_calendar_replace(account=account, time_zone="UTC", intervals=NINE_TO_SIX, closed_dates=[date(2026, 1, 1)])
    business_calendar_replace(
        account=other_account, time_zone="Asia/Tokyo", intervals=NINE_TO_SIX[:2], closed_dates=[date(2026, 5, 5)]
    )
    become_app_role()

    def visible():
        return (
            set(BusinessCalendar.objects.values_list("account_id", flat=True)),
            BusinessInterval.objects.count(),
            set(ClosedDate.objects.values_list("date", flat=True)),
        )

    assert visible() == (set(), 0, set())  # nothing bound: nothing seen
    rls.bind_account(account)
    assert visible() == ({account.pk}, 5, {date(2026, 1, 1)})
    assert business_schedules([account.pk, other_account.pk]).keys() == {account.pk}
    rls.bind_account(other_account)
    assert visible() == ({other_account.pk}, 2, {date(2026, 5, 5)})
    # Another account's calendar cannot be changed: its row is hidden.
    assert BusinessCalendar.objects.filter(account=account).update(time_zone="Europe/Paris") == 0
