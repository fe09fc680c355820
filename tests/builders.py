"""Small builders over the factories, in the words of the contract, and helpers the test modules share."""

import csv
import io
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext

from flowpilot_analytics.cross_account import analytics_cross_account
from flowpilot_analytics.factories import AiSessionFactory, AiSessionStepFactory, SessionHandoffFactory
from flowpilot_analytics.models import AiSession, AiSessionStep, Membership, SessionHandoff

# The tables holding account rows, under Row-Level Security on PostgreSQL.
TENANT_MODELS = (AiSession, AiSessionStep, SessionHandoff, Membership)


def claimed_handoff(account, *, claimed_at, lag=None, session=None, claimed_by=None):
    """A handoff claimed at ``claimed_at``; with ``lag`` (seconds), a step that long after the claim."""
    session = session or AiSessionFactory(account=account, created_at=claimed_at - timedelta(minutes=10))
    handoff = SessionHandoffFactory(
        session=session,
        created_at=claimed_at - timedelta(minutes=1),
        claimed_at=claimed_at,
        claimed_by=claimed_by,
    )
    if lag is not None:
        AiSessionStepFactory(session=session, created_at=claimed_at + timedelta(seconds=lag))
    return handoff


def step(session, at):
    return AiSessionStepFactory(session=session, created_at=at)


def cross_account_overhead():
    """Statements the cross-account mode costs (a savepoint, and its setting on PostgreSQL)."""
    with CaptureQueriesContext(connection) as queries:
        with analytics_cross_account():
            pass
    return len(queries)


def account_ids_visible():
    """The account ids of every row each tenant table shows, queried with no filter at all."""
    return {
        model.__name__: set(model.objects.values_list("account_id", flat=True)) for model in TENANT_MODELS
    }


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


def parse_csv(response):
    content = b"".join(response.streaming_content) if response.streaming else response.content
    text = content.decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


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
