"""The drill-down's CSV export: streamed from a server-side cursor, bound to the account, bounded by settings.

Core suite: with the app's models and with a host's (tests/settings_host_models.py), whose
own Row-Level Security setting the export's transaction sets as the request's did.

Its memory and time at 10k, 100k and 250k rows are measured by `make export-load`
(docs/load-test.md), not here.
"""

import csv
import io

import pytest
from django.db import OperationalError, connection

from flowpilot_analytics.api import pagination, renderers
from tests.builders import HANDOFFS, as_user
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db, pytest.mark.core]


def export(client, **params):
    """The data lines of the export (dicts) and its closing marker line (``None`` when complete)."""
    response = client.get(HANDOFFS, {"format": "csv", **params})
    assert response.status_code == 200 and response.streaming
    text = b"".join(response.streaming_content).decode()
    lines = text.splitlines()
    marker = lines.pop() if lines[-1].startswith("# ") else None
    assert not any(line.startswith("#") for line in lines)
    return list(csv.DictReader(io.StringIO("\n".join(lines)))), marker


def limits(settings, **values):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, **values}


def cursor_in(marker):
    return marker.rsplit("cursor=", 1)[1]


def all_ids(client, ordering):
    body = client.get(HANDOFFS, {"page_size": 500, "ordering": ordering}).json()
    return [str(row["handoff_id"]) for row in body["results"]]


@pytest.mark.parametrize("ordering", ["-claimed_at", "seconds_to_first_action"])
def test_past_the_row_limit_the_file_ends_with_a_marker_and_its_cursor_gives_the_rest(
    api_client, team, settings, ordering
):
    limits(settings, EXPORT_MAX_ROWS=3)
    client = as_user(api_client, team["admin"])

    rows, marker = export(client, ordering=ordering)
    seen, parts = [row["handoff_id"] for row in rows], 1
    assert len(rows) == 3
    assert marker.startswith(
        "# Truncated after 3 rows (EXPORT_MAX_ROWS). For the rest ask again with cursor="
    )
    while marker is not None:
        rows, marker = export(client, ordering=ordering, cursor=cursor_in(marker))
        seen += [row["handoff_id"] for row in rows]
        parts += 1

    assert seen == all_ids(client, ordering)
    assert len(seen) == 8 and parts == 3


def test_exactly_the_row_limit_is_a_complete_file(api_client, team, settings):
    limits(settings, EXPORT_MAX_ROWS=8)
    rows, marker = export(as_user(api_client, team["admin"]))
    assert len(rows) == 8 and marker is None


def test_without_limits_every_row_is_written(api_client, team, settings):
    limits(settings, EXPORT_MAX_ROWS=None, EXPORT_MAX_SECONDS=None)
    rows, marker = export(as_user(api_client, team["admin"]))
    assert len(rows) == 8 and marker is None


def test_past_the_time_limit_the_file_ends_with_a_marker(api_client, team, settings, monkeypatch):
    limits(settings, EXPORT_MAX_SECONDS=2)
    ticks = iter(range(100))  # every reading of the clock one second later
    monkeypatch.setattr(renderers, "monotonic", lambda: next(ticks))
    client = as_user(api_client, team["admin"])

    rows, marker = export(client)

    assert len(rows) == 1
    assert marker.startswith(
        "# Truncated after 2 s (EXPORT_MAX_SECONDS) at 1 rows. For the rest ask again with cursor="
    )
    monkeypatch.undo()
    rest, _ = export(client, cursor=cursor_in(marker))
    assert [row["handoff_id"] for row in rows + rest] == all_ids(client, "-claimed_at")


def drivers_error(message):
    """The driver's own error (psycopg's, sqlite3's), as Django lets it through when closing a cursor."""
    return connection.Database.OperationalError(message)


@pytest.mark.parametrize("error", [OperationalError, drivers_error], ids=["django's error", "the driver's"])
@pytest.mark.parametrize("after", [0, 2])
def test_a_database_lost_mid_export_ends_the_file_with_a_marker(api_client, team, monkeypatch, after, error):
    real_rows = pagination.handoff_rows

    def rows_then_lost(queryset, **kwargs):
        for index, row in enumerate(real_rows(queryset, **kwargs)):
            if index == after:
                raise error("terminating connection due to administrator command")
            yield row

    monkeypatch.setattr(pagination, "handoff_rows", rows_then_lost)
    client = as_user(api_client, team["admin"])

    rows, marker = export(client)

    assert len(rows) == after
    assert marker.startswith(
        f"# Interrupted after {after} rows: the database became unavailable. For the rest ask again"
    )
    assert ("cursor=" in marker) == bool(after)
    monkeypatch.undo()
    assert export(client)[1] is None  # the next request is served


# --- On PostgreSQL: the rows come from a server-side cursor, through Row-Level Security -----------


@pytest.fixture
def as_served_by_the_app_role(app_role):
    """The test's connection as the app role for the whole session (no test transaction to scope it)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {app_role}")
    yield app_role
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def in_the_export(sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_export_streams_from_a_server_side_cursor_bound_to_the_account(
    client, team, account, settings, as_served_by_the_app_role, monkeypatch
):
    # Rows come a chunk at a time (each chunk's claimers named in one query): chunks of 3 rows
    # leave the cursor open after the first row of the 8.
    monkeypatch.setattr(pagination, "EXPORT_CHUNK_SIZE", 3)
    client.force_login(team["admin"])
    response = client.get(HANDOFFS, {"format": "csv"})
    assert connection.in_atomic_block is False  # the request's transaction has ended

    chunks = iter(response.streaming_content)
    header, first_row = next(chunks), next(chunks)

    # Half-way through: a transaction of the export's own, bound to the account (the app's setting,
    # and the host's own with a host's models), a cursor open.
    assert connection.in_atomic_block
    assert in_the_export(
        "SELECT current_user, current_setting('flowpilot.account_id'),"
        f" current_setting('{MODELS.account_setting}'), current_setting('{MODELS.user_setting}')"
    ) == [(as_served_by_the_app_role, str(account.pk), str(account.pk), str(team["admin"].pk))]
    assert len(in_the_export("SELECT name FROM pg_cursors WHERE NOT is_holdable")) == 1
    rest = b"".join(chunks)

    # Through RLS as the app role: the bound account's rows, every one (an unbound read sees none).
    text = (header + first_row + rest).decode()
    assert len(list(csv.DictReader(io.StringIO(text)))) == 8
    assert not connection.in_atomic_block
    assert in_the_export("SELECT count(*) FROM pg_cursors") == [(0,)]
    for setting in {"flowpilot.account_id", MODELS.account_setting}:
        assert in_the_export(f"SELECT current_setting('{setting}', true)") in ([("",)], [(None,)])


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_client_gone_mid_export_ends_the_transaction(client, team, as_served_by_the_app_role):
    client.force_login(team["admin"])
    response = client.get(HANDOFFS, {"format": "csv"})
    chunks = iter(response.streaming_content)
    next(chunks), next(chunks)
    assert connection.in_atomic_block

    response.close()  # what the server does when the client disconnects

    assert not connection.in_atomic_block
    assert in_the_export("SELECT count(*) FROM pg_cursors") == [(0,)]
