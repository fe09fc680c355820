"""A host's own models (tests/settings_host_models.py): what only such a host has to show.

The core suite proves the figures, windows, roles and isolation the same with
either model set; this module, of the core suite too, runs only with the host's:
no table of the app for a swapped model, the host's settings scoping every
request (and a request without the account's seeing nothing), the cross-account
faces under the host's own policies, and the indexes of the host's tables.
"""

import io
from datetime import timedelta

import pytest
from django.core.checks import Tags, run_checks
from django.core.management import CommandError, call_command
from django.db import connection

from flowpilot_analytics import rls
from flowpilot_analytics.access import Role
from flowpilot_analytics.checks import check_metric_indexes
from flowpilot_analytics.models import (
    AiSession,
    Membership,
    get_account_model,
    get_handoff_model,
    get_session_model,
    get_step_model,
)
from flowpilot_analytics.selectors import escalation_metrics
from tests.builders import URL, claimed_handoff, figures
from tests.model_sets import MODELS

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.core,
    pytest.mark.skipif(MODELS.name != "host", reason="runs with a host's own models (tests/settings_host_models.py)"),
]
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"
APP_TABLES_OF_SWAPPED_MODELS = {"flowpilot_analytics_account", "ai_session", "ai_session_step", "session_handoff"}


def test_the_models_in_use_are_the_hosts_and_the_apps_are_swapped_out():
    from tests.host_app.models import Escalation, Organization, Ticket, TicketEvent

    assert (get_account_model(), get_session_model(), get_step_model(), get_handoff_model()) == (
        Organization, Ticket, TicketEvent, Escalation
    )
    # The app's sessions went with its handoffs; its memberships point at the host's organisations.
    assert AiSession._meta.swapped == "helpdesk.Escalation"
    with pytest.raises(AttributeError, match="swapped"):
        AiSession.objects.all()
    assert Membership._meta.get_field("account").related_model is Organization


def test_no_table_of_the_app_for_a_swapped_model_and_check_is_clean():
    tables = set(connection.introspection.table_names())
    assert {"desk_organization", "desk_escalation", "flowpilot_analytics_membership"} <= tables
    assert tables.isdisjoint(APP_TABLES_OF_SWAPPED_MODELS)
    messages = [message for message in run_checks(include_deployment_checks=False) if message.is_serious()
                or message.level >= 30]
    assert messages == []
    assert check_metric_indexes(databases=["default"]) == []


def test_the_widget_names_the_hosts_organisations_and_links_to_no_admin_page(admin_client, three_accounts):
    content = admin_client.get(WIDGET_URL).content.decode()
    acme = three_accounts[0]
    assert f'data-account="{acme.pk}"' in content and f"{acme.title}\n" in content
    assert "/admin/helpdesk/" not in content  # the host registered no admin page for its escalations


def test_seed_demo_refuses_a_host_with_its_own_models():
    with pytest.raises(CommandError, match="FLOWPILOT_ANALYTICS_HANDOFF_MODEL = 'helpdesk.Escalation'"):
        call_command("seed_demo")


# --- The host's settings scope every request (PostgreSQL) -------------------------------------


@pytest.mark.postgres_only
def test_a_request_whose_account_setting_is_missing_sees_no_rows(two_tenants, api_client, become_app_role,
                                                                 settings):
    account, _ = two_tenants
    [engineer] = MODELS.members(account)
    api_client.force_authenticate(engineer)
    become_app_role()
    assert api_client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 2

    # The app no longer sets the host's account setting: the host's policies show nothing of the account.
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS,
                                    "RLS": {**settings.FLOWPILOT_ANALYTICS["RLS"], "account_setting": None}}
    response = api_client.get(URL, {"period": "7d"})
    assert response.status_code == 404  # not even the organisation's own row
    assert "n_handoffs_claimed" not in response.json()
    with rls.tenant_transaction():
        rls.bind_user(engineer, statement_timeout_ms=0)
        rls.bind_account(account)
        assert figures(escalation_metrics(account=account, period="7d")) == (0, 0, None, None, None)
        assert MODELS.visible_accounts()["handoff"] == set()


@pytest.mark.postgres_only
def test_the_cross_account_faces_read_every_organisation_through_the_hosts_setting(
    three_accounts, admin_client, become_app_role
):
    out = io.StringIO()
    call_command("escalation_report", "--format", "json", stdout=out)
    as_owner = out.getvalue()
    page_as_owner = admin_client.get(WIDGET_URL).content

    become_app_role()
    assert MODELS.visible_accounts()["handoff"] == set()  # the app role alone sees no organisation
    out = io.StringIO()
    call_command("escalation_report", "--format", "json", stdout=out)
    assert out.getvalue() == as_owner and f'"account_id": {three_accounts[0].pk}' in as_owner
    page = admin_client.get(WIDGET_URL).content
    assert page.count(b"data-account=") == page_as_owner.count(b"data-account=") == 3


@pytest.mark.postgres_only
def test_without_a_cross_account_setting_the_faces_say_they_need_a_connection_reading_every_account(
    three_accounts, admin_client, become_app_role, settings
):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS,
                                    "RLS": {**settings.FLOWPILOT_ANALYTICS["RLS"], "cross_account_setting": None}}
    become_app_role()
    with pytest.raises(CommandError, match=r"your Row-Level Security policies on desk_escalation .*"
                                           r"CROSS_ACCOUNT_DB_ALIAS.*cross_account_setting"):
        call_command("escalation_report")
    content = admin_client.get(WIDGET_URL).content.decode()
    assert 'id="escalation-summary-unavailable"' in content and "data-account=" not in content


# --- The indexes of the host's tables -----------------------------------------------------------


def drop_window_index():
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX desk_escalation_org_taken")


def test_the_index_check_and_command_name_a_missing_index_and_its_statement():
    drop_window_index()  # inside the test's transaction: back after it

    [warning] = check_metric_indexes(databases=["default"])
    assert warning.id == "flowpilot_analytics.W007"
    assert "desk_escalation has no window index" in warning.msg and "(organization_id, taken_at)" in warning.msg
    assert ("carrying ticket_id" in warning.msg) == (connection.vendor == "postgresql")
    out = io.StringIO()
    call_command("metric_indexes", stdout=out)
    statement = out.getvalue().splitlines()[1]
    assert statement in warning.hint
    if connection.vendor == "postgresql":
        assert statement == (
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "desk_escalation_fp_window" ON "desk_escalation" '
            '("organization_id", "taken_at") INCLUDE ("ticket_id") WHERE "taken_at" IS NOT NULL;'
        )
        with pytest.raises(CommandError, match="cannot run in a transaction"):
            call_command("metric_indexes", "--apply", stdout=io.StringIO())
    else:
        assert statement == (
            'CREATE INDEX IF NOT EXISTS "desk_escalation_fp_window" ON "desk_escalation" '
            '("organization_id", "taken_at") WHERE "taken_at" IS NOT NULL;'
        )


@pytest.mark.django_db(transaction=True)
def test_metric_indexes_apply_builds_what_is_missing(account, now):
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=5)
    drop_window_index()
    try:
        out = io.StringIO()
        call_command("metric_indexes", "--apply", stdout=out)
        assert out.getvalue().splitlines()[-1] == "-- built desk_escalation_fp_window"
        assert check_metric_indexes(databases=["default"]) == []
        assert escalation_metrics(account=account, period="7d", now=now).n_handoffs_claimed == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS desk_escalation_fp_window")
            cursor.execute("CREATE INDEX desk_escalation_org_taken ON desk_escalation (organization_id, taken_at)"
                           + (" INCLUDE (ticket_id)" if connection.vendor == "postgresql" else "")
                           + " WHERE taken_at IS NOT NULL")


def test_the_access_policy_maps_the_hosts_seat_levels(account, member, api_client):
    for role, status in ((Role.VIEWER, 403), (Role.ENGINEER, 200), (Role.ADMIN, 200)):
        api_client.force_authenticate(member(role))
        assert api_client.get(URL).status_code == status
    from tests.host_app.models import Seat

    assert sorted(Seat.objects.values_list("level", flat=True)) == ["observer", "supervisor", "technician"]


def test_run_checks_database_tag_is_clean_but_for_the_superuser(db):
    """As the tests' owner, W001 (the connection bypasses RLS) is expected; nothing else of the app."""
    ids = {message.id for message in run_checks(tags=[Tags.database], databases=["default"])}
    assert ids <= {"flowpilot_analytics.W001"}


@pytest.mark.postgres_only
def test_a_window_index_without_the_session_is_not_enough_on_postgresql():
    """Without the ticket in it, each handoff costs a visit to the table (docs/benchmarks-host-schema.md)."""
    drop_window_index()
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX plain_window ON desk_escalation (organization_id, taken_at)")
    [warning] = check_metric_indexes(databases=["default"])
    assert "carrying ticket_id" in warning.msg
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX covering_window ON desk_escalation (organization_id, taken_at, ticket_id)")
    assert check_metric_indexes(databases=["default"]) == []
