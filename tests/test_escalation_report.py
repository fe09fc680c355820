"""manage.py escalation_report: every format, the API's numbers, every error (core suite).

Accounts are named by slug, or by id when the account model has no slug.
"""

import csv
import io
import json
import os
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command, execute_from_command_line
from django.utils import timezone

from flowpilot_analytics.access import Role
from flowpilot_analytics.constants import METRIC_DEFINITION
from flowpilot_analytics.management.commands.escalation_report import PROGRESS_MIN_ACCOUNTS
from tests.builders import CONTRACT_FIELDS, URL, claimed_handoff, cross_account_overhead
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]
needs_slugs = pytest.mark.skipif(not MODELS.has_slugs, reason="these accounts have no slug: ids name them")

REPORT_FIELDS = {"account", "account_id", "clock"} | CONTRACT_FIELDS


def labels(accounts):
    """How the report names accounts: by slug, or by id."""
    return [MODELS.label(account) for account in accounts]


def assert_report_columns(columns):
    """The account first, then exactly the API's fields."""
    assert list(columns)[:2] == ["account", "account_id"]
    assert set(columns) == REPORT_FIELDS


class Terminal(io.StringIO):
    def isatty(self):
        return True


def report(*args, stdout=None, stderr=None):
    """Runs the command; returns (stdout, stderr)."""
    stdout = stdout if stdout is not None else io.StringIO()
    stderr = stderr if stderr is not None else io.StringIO()
    call_command("escalation_report", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def api_figures(api_client, member, account, period):
    api_client.force_authenticate(member(Role.ENGINEER, account=account))
    response = api_client.get(URL, {"period": period})
    assert response.status_code == 200
    return {field: response.json()[field] for field in CONTRACT_FIELDS}


@pytest.mark.parametrize("period", ["7d", "30d", "90d"])
def test_json_for_every_account_equals_the_api(three_accounts, api_client, member, period):
    out, err = report("--format", "json", "--period", period)

    rows = json.loads(out)
    assert [row["account"] for row in rows] == labels(three_accounts)  # by slug (or id)
    for row, account in zip(rows, three_accounts):
        assert_report_columns(row)
        assert row["account_id"] == account.pk
        assert {field: row[field] for field in CONTRACT_FIELDS} == api_figures(
            api_client, member, account, period
        )
    assert err == ""


def test_json_for_one_account(three_accounts):
    acme = three_accounts[0]
    rows = json.loads(report("--account", MODELS.label(acme), "--format", "json", "--period", "7d")[0])
    assert rows == [
        {
            "account": MODELS.label(acme),
            "account_id": acme.pk,
            "period": "7d",
            "clock": "calendar",
            "n_handoffs_claimed": 3,
            "n_handoffs_with_action": 2,
            "avg_seconds_to_first_action": 137.56,
            "median_seconds_to_first_action": 137.56,
            "p95_seconds_to_first_action": 234.364,
            "metric_definition": METRIC_DEFINITION,
        }
    ]


def test_csv_for_every_account_has_a_header_and_empty_cells_for_nulls(three_accounts, api_client, member):
    out, _ = report("--format", "csv")

    parsed = list(csv.DictReader(io.StringIO(out)))
    assert_report_columns(out.splitlines()[0].split(","))
    assert [row["account"] for row in parsed] == labels(three_accounts)
    acme_api = api_figures(api_client, member, three_accounts[0], "30d")
    assert float(parsed[0]["p95_seconds_to_first_action"]) == acme_api["p95_seconds_to_first_action"]
    assert int(parsed[0]["n_handoffs_claimed"]) == acme_api["n_handoffs_claimed"] == 3
    zeta = parsed[2]
    assert zeta["n_handoffs_claimed"] == "0"
    assert zeta["avg_seconds_to_first_action"] == zeta["median_seconds_to_first_action"] == ""
    assert zeta["metric_definition"] == METRIC_DEFINITION


def test_csv_for_one_account(three_accounts):
    out, _ = report("--account", str(three_accounts[1].pk), "--format", "csv")
    assert list(csv.DictReader(io.StringIO(out))) == [
        {
            "account": MODELS.label(three_accounts[1]),
            "account_id": str(three_accounts[1].pk),
            "period": "30d",
            "clock": "calendar",
            "n_handoffs_claimed": "1",
            "n_handoffs_with_action": "1",
            "avg_seconds_to_first_action": "3.0",
            "median_seconds_to_first_action": "3.0",
            "p95_seconds_to_first_action": "3.0",
            "metric_definition": METRIC_DEFINITION,
        }
    ]


def test_table_for_every_account_is_aligned(three_accounts):
    out, err = report("--period", "7d")

    lines = out.splitlines()
    assert lines[0].startswith("Escalation report, period 7d: ")
    assert lines[1].split()[0] == "ACCOUNT"
    assert [line.split()[0] for line in lines[2:5]] == labels(three_accounts)
    # Lags as people read them: 137.56 s is 2m 18s (the JSON and CSV keep the seconds).
    assert lines[2].split()[2:] == ["3", "2", "66.6%", "2m", "18s", "2m", "18s", "3m", "54s"]
    assert lines[4].split()[2:] == ["0", "0", "\u2014", "\u2014", "\u2014", "\u2014"]
    assert len({len(line) for line in lines[1:5]}) == 1
    assert lines[-1] == f"Metric: {METRIC_DEFINITION}"
    assert err == ""


def test_table_for_one_account(three_accounts):
    globex = MODELS.label(three_accounts[1])
    lines = report("--account", globex)[0].splitlines()
    assert [line.split()[0] for line in lines[2:-2]] == [globex]


@needs_slugs
def test_accounts_by_slug_or_id_repeated_or_listed_keep_their_order_once_each(three_accounts):
    acme, globex, zeta = three_accounts
    rows = json.loads(
        report(
            "--account", "zeta", str(acme.pk), "--account", "acme", "--account", "globex", "--format", "json"
        )[0]
    )
    assert [row["account"] for row in rows] == ["zeta", "acme", "globex"]


def test_output_file_gets_the_report_and_says_what_it_wrote(three_accounts, tmp_path):
    target = tmp_path / "report.json"
    out, err = report("--format", "json", "--output", str(target))
    assert out == ""
    assert err == f"Wrote 3 accounts (json, 30d) to {target}.\n"
    assert report("--format", "json", "--output", str(target), "--verbosity", "0") == ("", "")
    assert [row["account"] for row in json.loads(target.read_text(encoding="utf-8"))] == labels(three_accounts)
    assert os.listdir(tmp_path) == ["report.json"]


def test_query_count_does_not_grow_with_accounts(three_accounts, django_assert_num_queries):
    # One query lists the accounts, one computes every account's figures.
    expected = 2 + cross_account_overhead()
    with django_assert_num_queries(expected):
        report("--format", "json")
    for index in range(10):
        claimed_handoff(MODELS.account(), claimed_at=timezone.now() - timedelta(hours=index + 1), lag=index)
    with django_assert_num_queries(expected):
        report("--format", "json")


# Errors: a clear message, a non-zero exit, no output file.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nope"], "no account with the slug or id 'nope'"),
        (["--account", "1", "999999", "--account", "x"], "'999999', 'x'"),
        (["--account", ""], "--account: give an account slug or id"),
        (["--period", "14d"], "argument --period: invalid choice: '14d'"),
        (["--period", "7D"], "argument --period: invalid choice: '7D'"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--output", ""], "--output: give a file path"),
    ],
)
def test_bad_input_is_a_command_error(three_accounts, args, message):
    args = [str(three_accounts[0].pk) if arg == "1" else arg for arg in args]
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        report(*args)


@needs_slugs
def test_an_id_that_is_also_another_accounts_slug_is_ambiguous(three_accounts):
    acme = three_accounts[0]
    MODELS.account(slug=str(acme.pk))
    with pytest.raises(CommandError, match="is the id of one account and the slug of another"):
        report("--account", str(acme.pk))


def test_unknown_account_leaves_an_existing_output_file_untouched(three_accounts, tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("yesterday's report")
    with pytest.raises(CommandError):
        report("--account", "nope", "--format", "csv", "--output", str(target))
    assert target.read_text() == "yesterday's report"
    assert os.listdir(tmp_path) == ["report.csv"]


@pytest.mark.parametrize(
    "where",
    ["missing-directory/report.csv", "a-file/report.csv", "a-directory"],
)
def test_unwritable_output_is_a_command_error_and_leaves_nothing(three_accounts, tmp_path, where):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-directory").mkdir()
    before = sorted(os.listdir(tmp_path))

    with pytest.raises(CommandError, match="--output: cannot write"):
        report("--output", str(tmp_path / where))

    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "a-directory") == []


def test_from_the_command_line_errors_go_to_stderr_with_a_non_zero_exit(three_accounts, capsys):
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "escalation_report", "--account", "nope"])
    assert exited.value.code != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no account with the slug or id 'nope'" in captured.err


# Progress: on stderr, only for a person watching a big report.


@pytest.fixture
def many_accounts(db):
    return [MODELS.account() for _ in range(PROGRESS_MIN_ACCOUNTS)]


def test_progress_on_stderr_when_both_streams_are_a_terminal_and_accounts_are_many(many_accounts):
    out, err = report("--format", "json", stdout=Terminal(), stderr=Terminal())
    assert len(json.loads(out)) == PROGRESS_MIN_ACCOUNTS  # stdout holds the report only
    assert f"Computing the 30d figures of {PROGRESS_MIN_ACCOUNTS} accounts" in err
    assert f"Wrote {PROGRESS_MIN_ACCOUNTS} accounts in" in err


def test_progress_with_output_file_needs_only_stderr_to_be_a_terminal(many_accounts, tmp_path):
    _, err = report("--output", str(tmp_path / "r.txt"), stderr=Terminal())
    assert f"to {tmp_path / 'r.txt'}" in err


@pytest.mark.parametrize(
    ("stdout", "stderr", "extra"),
    [
        (io.StringIO(), Terminal(), []),  # piped, e.g. into jq
        (Terminal(), io.StringIO(), []),  # stderr redirected
        (Terminal(), Terminal(), ["--verbosity", "0"]),
    ],
)
def test_no_progress_when_piped_redirected_or_quiet(many_accounts, stdout, stderr, extra):
    out, err = report("--format", "json", *extra, stdout=stdout, stderr=stderr)
    assert err == ""
    assert json.loads(out)


def test_no_progress_for_a_few_accounts(three_accounts):
    assert report(stdout=Terminal(), stderr=Terminal())[1] == ""


# The API's window options, validated as the API validates them.


def test_start_end_time_zone_and_target_give_the_apis_figures(three_accounts, api_client, member):
    acme = three_accounts[0]
    now = timezone.now()
    start, end = (now - timedelta(days=5)).date().isoformat(), (now + timedelta(days=1)).date().isoformat()
    window = {"start": start, "end": end, "time_zone": "Europe/Paris", "target_seconds": "60"}
    rows = json.loads(report("--account", MODELS.label(acme), "--start", start, "--end", end,
                             "--time-zone", "Europe/Paris", "--target-seconds", "60", "--format", "json")[0])
    api_client.force_authenticate(member(Role.ENGINEER, account=acme))
    body = api_client.get(URL, window).json()
    [row] = rows
    assert row["period"] == "custom"
    assert (row["window_start"], row["window_end"]) == (body["window_start"], body["window_end"])
    for field in (*CONTRACT_FIELDS, "target_seconds", "n_handoffs_within_target", "within_target_rate"):
        assert row[field] == body[field], field
    assert row["n_handoffs_within_target"] == 1


def test_compare_previous_adds_the_window_before_and_the_changes(three_accounts, api_client, member):
    acme = three_accounts[0]
    [row] = json.loads(report("--account", MODELS.label(acme), "--period", "7d", "--compare", "previous",
                              "--format", "json")[0])
    api_client.force_authenticate(member(Role.ENGINEER, account=acme))
    body = api_client.get(URL, {"period": "7d", "compare": "previous"}).json()
    for field in CONTRACT_FIELDS - {"period", "metric_definition"}:
        assert row[f"previous_{field}"] == body["previous"][field], field
        assert row[f"change_{field}"] == body["change"][field], field

    table = report("--account", MODELS.label(acme), "--period", "7d", "--compare", "previous")[0]
    assert "PREVIOUS MEDIAN" in table.splitlines()[1] and "MEDIAN CHANGE" in table.splitlines()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-03-01"], "--end: Give start and end together."),
        (["--period", "7d", "--start", "2026-03-01", "--end", "2026-03-02"], "--period: Give either --period or --start and --end"),
        (["--start", "2026-03-02", "--end", "2026-03-01"], "--end: "),
        (["--start", "01/03/2026", "--end", "2026-03-02"], "--start: Enter an ISO 8601 date"),
        (["--start", "2025-01-01", "--end", "2026-01-03"], "--end: "),
        (["--time-zone", "Mars/Olympus"], "--time-zone: \"Mars/Olympus\" is not an IANA time zone"),
        (["--target-seconds", "-1"], "--target-seconds: "),
        (["--target-seconds", "inf"], "--target-seconds: "),
        (["--target-seconds", "soon"], "--target-seconds: A valid number is required."),
        (["--compare", "next"], "argument --compare: invalid choice: 'next'"),
    ],
)
def test_bad_window_options_are_a_command_error_naming_the_option(three_accounts, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        report(*args)


def test_a_csv_file_starts_with_the_byte_order_mark_stdout_does_not(three_accounts, tmp_path):
    target = tmp_path / "report.csv"
    report("--format", "csv", "--output", str(target))
    assert target.read_bytes().startswith(b"\xef\xbb\xbfaccount,")
    assert report("--format", "csv")[0].startswith("account,")
