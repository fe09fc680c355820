"""Small builders in the words of the contract, over the models in use (tests/model_sets.py), and helpers.

``claimed_handoff`` and ``step`` build rows of whichever models the run uses (the
app's, or a host's); a test of the core suite builds through them and
``MODELS``, never through a model class.
"""

import csv
import io
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext

from flowpilot_analytics.cross_account import analytics_cross_account
from tests.model_sets import MODELS


def claimed_handoff(account, *, claimed_at, lag=None, session=None, claimed_by=None):
    """A handoff claimed at ``claimed_at``; with ``lag`` (seconds), a step that long after the claim."""
    session = session or MODELS.session(account, created_at=claimed_at - timedelta(minutes=10))
    handoff = MODELS.handoff(
        session, created_at=claimed_at - timedelta(minutes=1), claimed_at=claimed_at, claimed_by=claimed_by
    )
    if lag is not None:
        MODELS.step(session, claimed_at + timedelta(seconds=lag))
    return handoff


def unclaimed_handoff(session, *, created_at):
    return MODELS.handoff(session, created_at=created_at, claimed_at=None)


def step(session, at):
    return MODELS.step(session, at)


def cross_account_overhead():
    """Statements the cross-account mode costs (a savepoint, and its setting on PostgreSQL)."""
    with CaptureQueriesContext(connection) as queries:
        with analytics_cross_account():
            pass
    return len(queries)


def account_ids_visible():
    """The account ids of every row each tenant table shows, queried with no filter at all."""
    return MODELS.visible_accounts()


def set_config(values):
    """``set_config(name, value, true)`` on the default connection, as any SQL running as the app role could (injected, or a bug)."""
    with connection.cursor() as cursor:
        for name, value in values.items():
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def nothing_visible():
    return {kind: set() for kind in MODELS.visible_accounts()}


def only_visible(*accounts):
    return {kind: {account.pk for account in accounts} for kind in MODELS.visible_accounts()}


# --- The API -----------------------------------------------------------------------------

URL = "/api/v1/analytics/flowpilot/escalations"
TREND = URL + "/trend"
BY_ENGINEER = URL + "/by-engineer"
HANDOFFS = URL + "/handoffs"
# The seed schema's fields (docs/metric.md): never renamed, dropped or retyped.
CONTRACT_FIELDS = {
    "period",
    "n_handoffs_claimed",
    "n_handoffs_with_action",
    "avg_seconds_to_first_action",
    "median_seconds_to_first_action",
    "p95_seconds_to_first_action",
    "metric_definition",
}


def figures(metrics):
    """The contract's five figures of an ``EscalationMetrics``, as a tuple."""
    return (
        metrics.n_handoffs_claimed,
        metrics.n_handoffs_with_action,
        metrics.avg_seconds_to_first_action,
        metrics.median_seconds_to_first_action,
        metrics.p95_seconds_to_first_action,
    )


def as_user(api_client, user):
    api_client.force_authenticate(user)
    return api_client


# --- CSV ---------------------------------------------------------------------------------


def csv_text(response):
    """A CSV answer's text: UTF-8 after the byte order mark every CSV of the app starts with (for Excel)."""
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert content.startswith(b"\xef\xbb\xbf"), content[:20]
    return content.decode("utf-8-sig")


def parse_csv(response):
    return list(csv.DictReader(io.StringIO(csv_text(response), newline="")))


def flat(body):
    """The JSON as the CSV's columns: nested names joined with _, the distribution one column per bucket."""
    row = {}
    for name, value in body.items():
        if isinstance(value, dict):
            row.update({f"{name}_{key}": inner for key, inner in flat(value).items()})
        elif isinstance(value, list):
            row.update({f"{name}_{item['bucket']}": item["count"] for item in value})
        else:
            row[name] = value
    return row


def cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# --- Bad input shared by the faces -------------------------------------------------------


# Windows the API refuses, each with the field its 400 names (tests/test_api_windows.py); the
# dashboard refuses those of its form's fields the same way (tests/test_dashboard.py).
BAD_QUERIES = [
    ({"period": "7d", "start": "2026-03-01", "end": "2026-03-02"}, "period"),
    ({"period": "7d", "end": "2026-03-02"}, "period"),
    ({"start": "2026-03-01"}, "end"),
    ({"end": "2026-03-01"}, "start"),
    ({"start": "01/03/2026", "end": "2026-03-02"}, "start"),
    ({"start": "2026-02-30", "end": "2026-03-02"}, "start"),
    ({"start": "2026-03-01", "end": "tomorrow"}, "end"),
    ({"start": "", "end": "2026-03-02"}, "start"),
    ({"start": "2026-03-02", "end": "2026-03-01"}, "end"),
    ({"start": "2026-03-01", "end": "2026-03-01"}, "end"),
    ({"start": "2025-01-01", "end": "2026-01-03"}, "end"),
    ({"start": "2026-03-01", "end": "2026-03-02", "time_zone": "Mars/Olympus"}, "time_zone"),
    ({"time_zone": ""}, "time_zone"),
    ({"target_seconds": "abc"}, "target_seconds"),
    ({"target_seconds": "-1"}, "target_seconds"),
    ({"target_seconds": "nan"}, "target_seconds"),
    ({"target_seconds": "inf"}, "target_seconds"),
    ({"target_seconds": "1e12"}, "target_seconds"),
    ({"compare": "next"}, "compare"),
]
