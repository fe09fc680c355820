"""Rendering and writing the escalation report (pure: no database)."""

import csv
import io
import json
import os
import stat
from datetime import datetime, timezone

import pytest

from flowpilot_analytics import reporting
from flowpilot_analytics.reporting import render_csv, render_json, render_table, write_atomically

FIELDS = ["account", "account_id", "period", "n_handoffs_claimed", "median_seconds_to_first_action"]
ROWS = [
    {
        "account": "northwind",
        "account_id": 1,
        "period": "7d",
        "n_handoffs_claimed": 1237,
        "n_handoffs_with_action": 1107,
        "avg_seconds_to_first_action": 232.296,
        "median_seconds_to_first_action": 61.642,
        "p95_seconds_to_first_action": 633.0,
    },
    {
        "account": "a",
        "account_id": 12,
        "period": "7d",
        "n_handoffs_claimed": 0,
        "n_handoffs_with_action": 0,
        "avg_seconds_to_first_action": None,
        "median_seconds_to_first_action": None,
        "p95_seconds_to_first_action": None,
    },
]


def test_json_is_a_list_of_the_rows_with_nulls():
    assert json.loads(render_json(ROWS)) == ROWS
    assert render_json([]) == "[]\n"
    assert "\u2014" in render_json([{"metric_definition": "lag \u2014 not savings"}])


def test_csv_has_a_header_and_empty_cells_for_nulls():
    parsed = list(csv.reader(io.StringIO(render_csv(ROWS, fields=FIELDS))))
    assert parsed == [
        FIELDS,
        ["northwind", "1", "7d", "1237", "61.642"],
        ["a", "12", "7d", "0", ""],
    ]
    assert render_csv([], fields=FIELDS) == ",".join(FIELDS) + "\n"


def test_table_is_aligned_with_rates_and_durations_as_people_read_them():
    text = render_table(
        ROWS,
        period="7d",
        window_start=datetime(2026, 6, 8, 12, tzinfo=timezone.utc),
        window_end=datetime(2026, 6, 15, 12, tzinfo=timezone.utc),
        metric_definition="the definition",
    )
    lines = text.splitlines()
    assert lines[0] == "Escalation report, period 7d: 2026-06-08 12:00:00 to 2026-06-15 12:00:00 UTC"
    assert lines[1].split() == [
        "ACCOUNT",
        "ID",
        "CLAIMED",
        "WITH",
        "ACTION",
        "ACTION",
        "RATE",
        "AVG",
        "MEDIAN",
        "P95",
    ]
    # Lags as people read them; the JSON and CSV keep the exact seconds.
    assert lines[2].split() == ["northwind", "1", "1237", "1107", "89.4%", "3m", "52s", "1m", "02s", "10m", "33s"]
    assert lines[3].split() == ["a", "12", "0", "0", "\u2014", "\u2014", "\u2014", "\u2014"]
    # Right-aligned numbers: every row's columns end at the same place.
    assert len(lines[1]) == len(lines[2]) == len(lines[3])
    assert lines[-1] == "Metric: the definition"


def test_table_without_accounts_says_so():
    text = render_table(
        [],
        period="30d",
        window_start=datetime(2026, 1, 1),
        window_end=datetime(2026, 1, 31),
        metric_definition="d",
    )
    assert "No accounts." in text


def test_write_atomically_replaces_the_file_whole_with_usual_permissions(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    write_atomically(target, "new \u2014 text\n")
    assert target.read_text(encoding="utf-8") == "new \u2014 text\n"
    assert os.listdir(tmp_path) == ["report.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_atomically_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporting.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_atomically_into_a_missing_directory_fails_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "report.json", "x")
    assert os.listdir(tmp_path) == []


def test_a_target_and_a_comparison_add_their_columns_and_the_table_names_its_time_zone():
    row = {**ROWS[0], "within_target_rate": 0.8795, "previous_median_seconds_to_first_action": 126.5,
           "change_median_seconds_to_first_action": -64.858}
    text = render_table(
        [row],
        period="custom",
        window_start=datetime(2026, 6, 8, 2, tzinfo=timezone.utc),
        window_end=datetime(2026, 6, 15, 2, tzinfo=timezone.utc),
        time_zone="Europe/Paris",
        metric_definition="d",
        target=True,
        compare=True,
    )
    lines = text.splitlines()
    assert lines[0].endswith("2026-06-15 02:00:00 Europe/Paris")
    assert lines[1].split()[-5:] == ["WITHIN", "TARGET", "PREVIOUS", "MEDIAN", "MEDIAN", "CHANGE"][-5:]
    assert lines[2].split()[-5:] == ["87.9%", "2m", "07s", "-1m", "05s"]
