"""The scenario every host variant builds (examples/smoke_kit), here with the app's own models.

``scripts/host_smoke.py`` compares the dump this writes (``HOST_SMOKE_DUMP``) with
the one a host with its own models writes for the same scenario: they must be
equal. On PostgreSQL the API is asked as the RLS-bound app role.
"""

import pytest
from smoke_kit.scenario import dump_scenario

from flowpilot_analytics.models import Account, AiSession, AiSessionStep, Membership, SessionHandoff


class Builder:
    """The scenario's rows, as the app's own models hold them."""

    def __init__(self, user_model):
        self.user_model = user_model

    def account(self, slug, name):
        return Account.objects.create(slug=slug, name=name)

    def user(self, username, full_name):
        first, _, last = full_name.partition(" ")
        return self.user_model.objects.create_user(username, first_name=first, last_name=last)

    def grant(self, user, account, role):
        Membership.objects.create(user=user, account=account, role=role)

    def session(self, account, opened_at):
        return AiSession.objects.create(account=account, created_at=opened_at)

    def step(self, session, account, at):
        AiSessionStep.objects.create(session=session, account=account, created_at=at)

    def handoff(self, session, account, raised_at, claimed_at, claimed_by):
        return SessionHandoff.objects.create(session=session, account=account, created_at=raised_at,
                                             claimed_at=claimed_at, claimed_by=claimed_by)


@pytest.mark.django_db
def test_the_scenarios_answers(client, django_user_model, monkeypatch):
    dump_scenario(Builder(django_user_model), client=client, django_user_model=django_user_model,
                  monkeypatch=monkeypatch, extra_apps=("auth", "contenttypes", "sessions", "admin"))
