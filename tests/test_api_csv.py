"""format=csv (or Accept: text/csv) on every analytics endpoint: the JSON's fields, as a download (core suite).

The file is named after the account's slug, or its id when the account model has no slug.
"""

import re
from datetime import timedelta
from urllib.parse import unquote

import pytest
from django.utils import timezone

from flowpilot_analytics.access import Role
from tests.builders import BY_ENGINEER, HANDOFFS, TREND, URL, as_user, cell, claimed_handoff, flat, parse_csv
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]


@pytest.mark.parametrize("url", [URL, TREND, BY_ENGINEER, HANDOFFS])
def test_repeated_format_is_a_400(api_client, team, url):
    response = as_user(api_client, team["admin"]).get(url + "?format=csv&format=json")
    assert response.status_code == 400 and "format" in response.json()


def test_the_summary_as_csv_is_one_row_of_the_same_fields(api_client, account, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    params = {"period": "30d", "compare": "previous", "target_seconds": "60"}
    body = client.get(URL, params).json()
    response = client.get(URL, {**params, "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="escalations-{MODELS.label(account)}-30d.csv"'
    )
    rows = parse_csv(response)
    assert len(rows) == 1
    assert list(rows[0]) == list(flat(body))
    assert "distribution_under_1m" in rows[0] and "previous_distribution_over_24h" in rows[0]
    assert rows[0] == {name: cell(value) for name, value in flat(body).items()}
    assert rows[0]["metric_definition"].startswith("elapsed_seconds(")


def test_accept_text_csv_works_as_format_csv(api_client, account, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    by_header = client.get(TREND, {"period": "7d"}, HTTP_ACCEPT="text/csv")
    by_param = client.get(TREND, {"period": "7d", "format": "csv"})
    assert by_header.content == by_param.content
    assert by_header["Content-Disposition"] == (
        f'attachment; filename="escalations-trend-{MODELS.label(account)}-7d.csv"'
    )
    rows = parse_csv(by_header)
    buckets = client.get(TREND, {"period": "7d"}).json()["buckets"]
    assert len(rows) == len(buckets) == 8
    assert [row["range_start"] for row in rows] == [bucket["range_start"] for bucket in buckets]
    summary = client.get(URL, {"period": "7d"}).json()
    assert sum(int(row["n_handoffs_claimed"]) for row in rows) == summary["n_handoffs_claimed"] == 8


def test_by_engineer_csv_escapes_commas_quotes_newlines_non_ascii_and_formulas(
    api_client, account, team, frozen_clock
):
    client = as_user(api_client, team["admin"])
    body = client.get(BY_ENGINEER).json()
    response = client.get(BY_ENGINEER, {"format": "csv"})
    raw = response.content.decode("utf-8")
    rows = parse_csv(response)

    assert response["Content-Disposition"] == (
        f'attachment; filename="escalations-by-engineer-{MODELS.label(account)}-30d.csv"'
    )
    assert [row["engineer_name"] for row in rows] == [
        '\'=HYPERLINK("http://x") +1',
        "Bob\nline two Ø",
        'Zoë Ångström, "Ali"',
        "(deleted user)",
    ]
    assert '"Zoë Ångström, ""Ali"""' in raw  # quoted, quotes doubled
    assert "\r\n" in raw
    envelope = {name: value for name, value in body.items() if name != "engineers"}
    for index, (row, engineer) in enumerate(zip(rows, body["engineers"])):
        expected_row = {name: cell(value) for name, value in flat({**envelope, **engineer}).items()}
        expected_row["engineer_name"] = row["engineer_name"]  # checked above, with its formula guard
        if index:  # the definition is on the first line only
            expected_row["metric_definition"] = ""
        assert row == expected_row


def test_csv_keeps_negative_numbers_as_numbers(api_client, account, member):
    client = as_user(api_client, member(Role.ADMIN))
    now = timezone.now()
    claimed_handoff(account, claimed_at=now - timedelta(days=1), lag=10)
    claimed_handoff(account, claimed_at=now - timedelta(days=9), lag=100)
    row = parse_csv(client.get(URL, {"period": "7d", "compare": "previous", "format": "csv"}))[0]
    assert row["change_avg_seconds_to_first_action"] == "-90.0"


def test_the_handoffs_csv_streams_every_row_without_pages(api_client, account, team, frozen_clock):
    client = as_user(api_client, team["admin"])
    response = client.get(HANDOFFS, {"format": "csv", "page_size": 2, "ordering": "seconds_to_first_action"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == (
        f'attachment; filename="escalations-handoffs-{MODELS.label(account)}-30d.csv"'
    )
    rows = parse_csv(response)
    body = client.get(HANDOFFS, {"page_size": 500, "ordering": "seconds_to_first_action"}).json()
    assert len(rows) == len(body["results"]) == 8
    envelope = {name: body[name] for name in body if name not in ("results", "next", "next_cursor")}
    assert [row["handoff_id"] for row in rows] == [str(row["handoff_id"]) for row in body["results"]]
    for index, (row, item) in enumerate(zip(rows, body["results"])):
        expected_row = {name: cell(value) for name, value in flat({**envelope, **item}).items()}
        if index:  # the definition is on the first line only
            expected_row["metric_definition"] = ""
        if item["claimed_by_name"].startswith("="):
            expected_row["claimed_by_name"] = "'" + item["claimed_by_name"]
        assert row == expected_row


def test_an_empty_list_as_csv_is_its_header(api_client, account, member):
    client = as_user(api_client, member(Role.ADMIN))
    for url, column in ((HANDOFFS, "seconds_to_first_action"), (BY_ENGINEER, "distribution_over_24h")):
        response = client.get(url, {"format": "csv"})
        content = b"".join(response.streaming_content) if response.streaming else response.content
        lines = content.decode().splitlines()
        assert len(lines) == 1 and column in lines[0].split(",")


def test_a_custom_window_names_its_dates_in_the_file_name(api_client, account, team):
    response = as_user(api_client, team["admin"]).get(
        BY_ENGINEER,
        {"start": "2026-03-01", "end": "2026-04-01", "time_zone": "Europe/Paris", "format": "csv"},
    )
    assert response["Content-Disposition"] == (
        f'attachment; filename="escalations-by-engineer-{MODELS.label(account)}-2026-03-01_2026-04-01.csv"'
    )


def test_an_error_asked_as_csv_is_json(api_client, team):
    response = as_user(api_client, team["admin"]).get(BY_ENGINEER, {"format": "csv", "period": "14d"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert "period" in response.json()
    assert as_user(api_client, team["viewer"]).get(HANDOFFS, {"format": "csv"}).status_code == 403


# --- Content-Disposition (RFC 6266), whatever the slug ----------------------------------

# One disposition, an ASCII fallback of safe characters, then the UTF-8 name percent-encoded.
DISPOSITION = re.compile(
    r"attachment; filename=\"(?P<ascii>[A-Za-z0-9._-]+)\"(?:; filename\*=UTF-8''(?P<utf8>[A-Za-z0-9%._~-]+))?"
)


@pytest.mark.skipif(not MODELS.has_slugs, reason="these accounts have no slug: their ids name the files")
@pytest.mark.parametrize(
    "slug, fallback, name",
    [
        ('q"uote; filename="evil.exe', "escalations-q_uote_filename_evil.exe-7d.csv",
         'escalations-q"uote; filename="evil.exe-7d.csv'),
        ("line\r\nSet-Cookie: x=1", "escalations-line_Set-Cookie_x_1-7d.csv",
         "escalations-line__Set-Cookie: x=1-7d.csv"),
        ("zoë-ångström", "escalations-zoe-angstrom-7d.csv", "escalations-zoë-ångström-7d.csv"),
        ("東京", "escalations-_-7d.csv", "escalations-東京-7d.csv"),
        ("../../etc\\passwd", "escalations-.._.._etc_passwd-7d.csv", None),  # no directory part
        ("acme", "escalations-acme-7d.csv", None),
    ],
)
def test_the_file_name_is_rfc_6266_for_any_slug(api_client, account, member, slug, fallback, name):
    account.slug = slug
    account.save()
    client = as_user(api_client, member(Role.ADMIN))
    response = client.get(URL, {"period": "7d", "format": "csv"})

    assert response.status_code == 200
    header = response["Content-Disposition"]
    match = DISPOSITION.fullmatch(header)
    assert match, header
    assert match["ascii"] == fallback
    assert (match["utf8"] and unquote(match["utf8"], errors="strict")) == name
    assert "=?" not in header  # never MIME-encoded
    # The streamed drill-down is named the same way.
    streamed = client.get(HANDOFFS, {"period": "7d", "format": "csv"})
    b"".join(streamed.streaming_content)
    assert DISPOSITION.fullmatch(streamed["Content-Disposition"])["ascii"] == fallback.replace(
        "escalations-", "escalations-handoffs-"
    )


@pytest.mark.parametrize("url", [URL, TREND, BY_ENGINEER, HANDOFFS])
def test_every_csv_starts_with_a_utf8_byte_order_mark_so_excel_reads_it_as_utf8(api_client, team, url):
    response = as_user(api_client, team["admin"]).get(url, {"format": "csv"})
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert content.startswith(b"\xef\xbb\xbfperiod,")
    # As pandas.read_csv and Python's utf-8-sig read it: the first column is "period", the
    # definition's em dash intact.
    text = content.decode("utf-8-sig")
    assert text.startswith("period,") and "\u2014" in text


@pytest.mark.parametrize("url", [TREND, BY_ENGINEER, HANDOFFS])
def test_a_list_csv_carries_the_definition_once_unless_asked_on_every_row(api_client, team, frozen_clock, url):
    client = as_user(api_client, team["admin"])
    first, *others = parse_csv(client.get(url, {"format": "csv"}))
    assert first["metric_definition"].startswith("elapsed_seconds(")
    assert others and all(row["metric_definition"] == "" for row in others)

    every = parse_csv(client.get(url, {"format": "csv", "definition": "every_row"}))
    assert len({row["metric_definition"] for row in every}) == 1
    assert every[-1]["metric_definition"] == first["metric_definition"]
    assert parse_csv(client.get(url, {"format": "csv", "definition": "first_row"}))[1]["metric_definition"] == ""


@pytest.mark.parametrize("params", [{"definition": "every_row"}, {"definition": "all", "format": "csv"}])
def test_definition_outside_a_csv_or_of_an_unknown_kind_is_a_400(api_client, team, params):
    response = as_user(api_client, team["admin"]).get(TREND, params)
    assert response.status_code == 400 and list(response.json()) == ["definition"]
