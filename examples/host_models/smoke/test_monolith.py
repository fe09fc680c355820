"""
A monolith with its own models, with the app installed from its wheel (scripts/host_smoke.py).

The host's organisations, seats (other role names), support tickets, steps and
escalations (other field names; tables named as the metric's definition names
them) and its own user model; only the contract's settings
(``monolith/settings.py``). The figures are shown equal to the app's own models'
by ``test_same_figures.py``; here, what only such a host has to show: none of
the app's tables for its swapped models, the host's policies scoping each
request, its seat levels deciding access, the widget linking to the host's own
admin pages. Nothing here imports the repository's code.
"""

import importlib.util
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from support.models import Escalation, Ticket, TicketStep
from tenants.models import Organization, Seat

from smoke_kit.installation import (  # noqa: F401  (collected here: the checks every host variant runs)
    test_the_app_is_the_installed_wheel_and_the_source_tree_is_not_on_the_path,
    test_the_system_checks_pass_and_no_migration_is_missing,
    test_the_wheel_brings_its_templates_and_static_files,
)

URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"
APP_ROLE = "flowpilot_app"
MONOLITH_APPS = ("auth", "contenttypes", "sessions", "admin", "tenants", "support")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()


def escalation(organization, *, claimed_ago, lag=None, by=None):
    now = timezone.now()
    ticket = Ticket.objects.create(organization=organization, opened_at=now - claimed_ago - timedelta(minutes=9))
    picked_up_at = now - claimed_ago
    row = Escalation.objects.create(ticket=ticket, organization=organization, raised_at=picked_up_at,
                                    picked_up_at=picked_up_at, picked_up_by=by)
    if lag is not None:
        TicketStep.objects.create(ticket=ticket, organization=organization,
                                  logged_at=picked_up_at + timedelta(seconds=lag))
    return row


@pytest.fixture
def acme(django_user_model):
    """An organisation whose agent acted after 10 and 30 s; another organisation that must never show."""
    organization = Organization.objects.create(display_name="Acme MSP", handle="acme")
    agent = django_user_model.objects.create_user("agent", display_name="Alex Agent")
    Seat.objects.create(member=agent, organization=organization, level=Seat.Level.AGENT)
    escalation(organization, claimed_ago=timedelta(days=1), lag=10, by=agent)
    escalation(organization, claimed_ago=timedelta(days=2), lag=30, by=agent)
    other = Organization.objects.create(display_name="Globex IT", handle="globex")
    escalation(other, claimed_ago=timedelta(days=1), lag=999)
    return organization, agent, other


def test_none_of_the_apps_tables_for_the_models_it_swapped_out():
    tables = set(connection.introspection.table_names())
    assert "flowpilot_analytics_account" not in tables
    assert {"ai_session", "ai_session_step", "session_handoff"} <= tables  # the monolith's own, by those names
    columns = {column.name for column in connection.introspection.get_table_description(
        connection.cursor(), "session_handoff")}
    assert {"picked_up_at", "picked_up_by_id", "organization_id", "ticket_id"} <= columns
    assert "flowpilot_analytics_membership" in tables  # the default policy's: unused here, harmless


def test_the_monoliths_seat_levels_decide_access(client, acme, django_user_model):
    organization, agent, other = acme
    client.force_login(agent)
    body = client.get(URL, {"period": "7d"}).json()
    assert (body["n_handoffs_claimed"], body["avg_seconds_to_first_action"]) == (2, 20.0)
    assert client.get(URL, {"account": other.pk}).status_code == 404
    auditor = django_user_model.objects.create_user("auditor")
    Seat.objects.create(member=auditor, organization=organization, level=Seat.Level.AUDITOR)
    client.force_login(auditor)
    assert client.get(URL).status_code == 403
    client.logout()
    assert client.get(URL).status_code == 403  # DRF's default authentication: session first


def test_claimers_are_named_by_the_monoliths_user_model(client, acme):
    organization, agent, _ = acme
    lead = Seat.objects.create(member=type(agent).objects.create_user("lead"), organization=organization,
                               level=Seat.Level.LEAD).member
    client.force_login(lead)
    [row] = client.get(URL + "/by-engineer").json()["engineers"]
    assert (row["engineer_name"], row["n_handoffs_claimed"]) == ("Alex Agent", 2)


def test_the_widget_links_each_organisation_to_the_monoliths_own_escalation_pages(admin_client, acme):
    organization, _, _ = acme
    content = admin_client.get(WIDGET_URL).content.decode()
    assert f'href="/admin/support/escalation/?organization__id__exact={organization.pk}"' in content
    assert 'data-account="acme"' in content and 'data-account="globex"' in content


def test_seed_demo_refuses_a_host_with_its_own_models():
    assert importlib.util.find_spec("factory") is None
    with pytest.raises(CommandError, match="its data are its own to load"):
        call_command("seed_demo")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="Row-Level Security needs PostgreSQL")
def test_the_monoliths_policies_scope_each_request_and_without_its_setting_nothing_is_seen(
    client, acme, settings
):
    organization, agent, _ = acme
    call_command("grant_app_role", APP_ROLE, "--extra-app", *MONOLITH_APPS, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")
        cursor.execute("SELECT count(*) FROM session_handoff")
        assert cursor.fetchone() == (0,), "the app role alone sees no organisation's rows"
    client.force_login(agent)
    assert client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 2

    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS,
                                    "RLS": {**settings.FLOWPILOT_ANALYTICS["RLS"], "account_setting": None}}
    response = client.get(URL, {"period": "7d"})
    assert response.status_code == 404 and "n_handoffs_claimed" not in response.json()


@pytest.mark.rls_settings
@pytest.mark.django_db(transaction=True, databases=["default", "cross_account"])
def test_as_the_app_role_the_pages_reading_every_organisation_read_through_the_reporting_role(
    admin_client, django_user_model, settings
):
    """Run with monolith.settings_rls (host_smoke.py, PostgreSQL): the cross-account alias is monolith_reporting."""
    if settings.FLOWPILOT_ANALYTICS.get("CROSS_ACCOUNT_DB_ALIAS") is None:
        pytest.skip("needs monolith.settings_rls (the cross-account alias)")
    for handle in ("acme", "globex"):
        organization = Organization.objects.create(display_name=handle.title(), handle=handle)
        escalation(organization, claimed_ago=timedelta(hours=3), lag=12)
    call_command("grant_app_role", APP_ROLE, "--extra-app", *MONOLITH_APPS, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {APP_ROLE}")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM session_handoff")
            assert cursor.fetchone() == (0,), "the app role alone sees no organisation's rows"
        content = admin_client.get(WIDGET_URL).content.decode()
        assert 'data-account="acme"' in content and 'data-account="globex"' in content
        report = StringIO()
        call_command("escalation_report", "--format", "json", stdout=report)
        rows = json.loads(report.getvalue())
        assert [(row["account"], row["n_handoffs_claimed"], row["avg_seconds_to_first_action"]) for row in rows] == [
            ("acme", 1, 12.0), ("globex", 1, 12.0)
        ]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
