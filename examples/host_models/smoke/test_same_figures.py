"""The scenario every host variant builds (examples/smoke_kit), here with the monolith's own models.

``scripts/host_smoke.py`` compares the dump this writes (``HOST_SMOKE_DUMP``) with
the one examples/host writes with the app's own models: they must be equal. On
PostgreSQL the API is asked as the RLS-bound app role, under the monolith's own
policies; and once more with the first-action index on, its triggers on the monolith's
tables, whose dump must equal the plain one too.
"""

import pytest
from django.db import connection
from smoke_kit.scenario import dump_scenario, dump_scenario_with_first_action_index
from support.models import Escalation, Ticket, TicketStep
from tenants.models import Organization, Seat

LEVELS = {"viewer": Seat.Level.AUDITOR, "engineer": Seat.Level.AGENT, "admin": Seat.Level.LEAD}


class Builder:
    """The scenario's rows, as the monolith holds them."""

    def __init__(self, user_model):
        self.user_model = user_model

    def account(self, slug, name):
        return Organization.objects.create(handle=slug, display_name=name)

    def user(self, username, full_name):
        return self.user_model.objects.create_user(username, display_name=full_name)

    def grant(self, user, account, role):
        Seat.objects.create(member=user, organization=account, level=LEVELS[role])

    def session(self, account, opened_at):
        return Ticket.objects.create(organization=account, opened_at=opened_at)

    def step(self, session, account, at):
        TicketStep.objects.create(ticket=session, organization=account, logged_at=at)

    def handoff(self, session, account, raised_at, claimed_at, claimed_by):
        return Escalation.objects.create(ticket=session, organization=account, raised_at=raised_at,
                                         picked_up_at=claimed_at, picked_up_by=claimed_by)


@pytest.mark.django_db
def test_the_scenarios_answers(client, django_user_model, monkeypatch):
    dump_scenario(Builder(django_user_model), client=client, django_user_model=django_user_model,
                  monkeypatch=monkeypatch, extra_apps=("auth", "contenttypes", "sessions", "admin", "tenants", "support"))


@pytest.mark.django_db
def test_the_scenarios_answers_with_the_first_action_index(client, django_user_model, monkeypatch, settings):
    """The opt-in first-action index, its triggers on the monolith's own tables: the same answers."""
    if connection.vendor != "postgresql":
        pytest.skip("the first-action index needs PostgreSQL")
    dump_scenario_with_first_action_index(
        Builder(django_user_model), client=client, django_user_model=django_user_model, monkeypatch=monkeypatch,
        extra_apps=("auth", "contenttypes", "sessions", "admin", "tenants", "support"), settings=settings)
