"""Small builders over the factories, in the words of the contract."""

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
