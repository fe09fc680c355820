"""The faces that read every account (admin summary, report, the app's admin pages, seed_demo), on PostgreSQL.

They read through a role of their own, the cross-account role: the
``cross_account_readers`` policy names it, the app role cannot become it, and
``FLOWPILOT_ANALYTICS["CROSS_ACCOUNT_DB_ALIAS"]`` gives them a connection as it.
Under the app role they see nothing and say why. The app role's own limits are
in ``test_rls.py``; the grant command in ``test_db_roles.py``.
"""

import json
import secrets
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import connection, connections, router
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flowpilot_analytics import rls
from flowpilot_analytics.admin_widget import escalation_summary_context
from flowpilot_analytics.cross_account import CrossAccountRefused, analytics_cross_account
from flowpilot_analytics.factories import AiSessionFactory, UserFactory
from flowpilot_analytics.models import Account, AiSession, Membership, SessionHandoff
from flowpilot_analytics.selectors import escalation_metrics_by_account
from tests.builders import account_ids_visible, claimed_handoff

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]

URL = "/api/v1/analytics/flowpilot/escalations"
WIDGET_URL = "/admin/flowpilot_analytics/escalationsummarypage/"
CROSS_ACCOUNT_ALIAS = "cross_account"


def use_cross_account_alias(settings):
    settings.FLOWPILOT_ANALYTICS = {
        **settings.FLOWPILOT_ANALYTICS, "CROSS_ACCOUNT_DB_ALIAS": CROSS_ACCOUNT_ALIAS
    }


def claimed_7d(summary):
    """{account id: 7d claims} of the admin summary's rows."""
    return {row.account.pk: row.for_period("7d").n_handoffs_claimed for row in summary.accounts}


def report_json():
    out = StringIO()
    call_command("escalation_report", "--period", "7d", "--format", "json", stdout=out)
    return {row["account"]: row["n_handoffs_claimed"] for row in json.loads(out.getvalue())}


# --- The cross-account role -------------------------------------------------------------


def test_the_cross_account_role_is_bound_by_rls_and_named_by_its_policy(cross_account_role):
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [cross_account_role])
        assert cursor.fetchone() == (False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_class "
            "WHERE relname = ANY(%s) AND pg_has_role(%s::name, relowner, 'MEMBER')",
            [list(rls.ACCOUNT_TABLES), cross_account_role],
        )
        assert cursor.fetchone() == (0,), "it owns nothing: it cannot turn RLS off"


def test_the_cross_account_role_reads_and_writes_every_account_with_no_setting(
    two_tenants, become_cross_account_role
):
    account, other_account = two_tenants
    become_cross_account_role()

    visible = account_ids_visible()
    by_account = escalation_metrics_by_account(period="7d")
    AiSessionFactory(account=other_account)

    assert visible["SessionHandoff"] == visible["Membership"] == {account.pk, other_account.pk}
    assert by_account[account.pk].n_handoffs_claimed == 2
    assert by_account[other_account.pk].n_handoffs_claimed == 3
    assert AiSession.objects.count() == 6


def test_as_the_cross_account_role_the_report_and_the_widget_show_every_account(
    two_tenants, become_cross_account_role
):
    account, other_account = two_tenants
    become_cross_account_role()

    assert report_json() == {account.slug: 2, other_account.slug: 3}
    context = escalation_summary_context()
    assert context["cross_account_problem"] is None
    shown = claimed_7d(context["escalation_summary"])
    assert shown == {account.pk: 2, other_account.pk: 3}


# --- Under the app role they see nothing, and say why ------------------------------------


def test_as_the_app_role_the_report_refuses_rather_than_print_zeros(two_tenants, become_app_role):
    become_app_role()
    with pytest.raises(CommandError, match=r"connects as flowpilot_app.*grant_cross_account_role"):
        report_json()


def test_as_the_app_role_the_widget_says_it_cannot_read_across_accounts(two_tenants, become_app_role, client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    become_app_role()

    page = client.get(WIDGET_URL)

    assert page.status_code == 200
    assert page.context["escalation_summary"] is None
    content = page.content.decode()
    assert 'id="escalation-summary-unavailable"' in content
    assert "CROSS_ACCOUNT_DB_ALIAS" in content and "grant_cross_account_role" in content


def test_as_the_app_role_the_apps_admin_pages_warn_and_list_nothing(
    two_tenants, become_app_role, admin_client
):
    admin_client.get("/admin/")  # the session and the content types, before the role switch
    become_app_role()

    sessions = admin_client.get("/admin/flowpilot_analytics/aisession/")

    assert sessions.status_code == 200
    assert sessions.context["cl"].result_count == 0
    [message] = [str(message) for message in get_messages(sessions.wsgi_request)]
    assert "connects as flowpilot_app" in message


def test_as_the_app_role_seed_demo_refuses_and_writes_nothing(become_app_role):
    become_app_role()
    with pytest.raises(CommandError, match="seed_demo writes every account's rows.*owner of the tables"):
        call_command("seed_demo", stdout=StringIO())
    assert not Account.objects.exists()


# --- The owner: the setting, for its own transaction only --------------------------------


def test_the_owner_reads_every_account_in_the_mode_and_only_there(two_tenants):
    """A non-superuser owner (as a host's migrating role may be): FORCE binds it; the mode opens it up."""
    account, other_account = two_tenants
    owner = f"flowpilot_probe_owner_{secrets.token_hex(4)}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {owner} NOLOGIN")  # rolled back with the test, as the rest
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending foreign-key checks
        for table in ("flowpilot_analytics_account", *rls.ACCOUNT_TABLES):
            cursor.execute(f"ALTER TABLE {table} OWNER TO {owner}")
        cursor.execute(f"SET LOCAL ROLE {owner}")
        cursor.execute("SELECT row_security_active('session_handoff')")
        assert cursor.fetchone() == (True,), "FORCE applies the policies to the owner"

    assert account_ids_visible()["SessionHandoff"] == set()
    with analytics_cross_account() as mode:
        inside = account_ids_visible()["SessionHandoff"]
    assert mode.problem is None
    assert inside == {account.pk, other_account.pk}
    assert account_ids_visible()["SessionHandoff"] == set(), "the mode ended with the block"


def test_cross_account_mode_is_refused_inside_an_account_scoped_request(account):
    with rls.tenant_transaction(), pytest.raises(CrossAccountRefused):
        with analytics_cross_account():
            pass


# --- Served as the app role, the faces read through the cross-account alias ---------------


@pytest.fixture
def served_as_app_role(app_role, cross_account_role, settings):
    """The default connection as the app role (for the whole test); the faces through ``cross_account``.

    ``cross_account`` (tests/settings.py) is a second connection to the test
    database that takes the cross-account role, as a host's alias would log in
    as it: it sees committed rows only, hence ``transaction=True`` below.
    """
    use_cross_account_alias(settings)
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {app_role}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")  # the flush after the test runs as the owner


@pytest.mark.django_db(transaction=True, databases=["default", CROSS_ACCOUNT_ALIAS])
def test_served_as_the_app_role_the_faces_read_every_account_through_their_alias(
    account, other_account, member, api_client, client, cross_account_role, served_as_app_role
):
    now = timezone.now()
    with connections[CROSS_ACCOUNT_ALIAS].cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == (cross_account_role,)
    # Built through the cross-account alias: the app role may write only a bound account's rows.
    with analytics_cross_account() as mode:
        assert mode.problem is None
        claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=10)
        for hours in (1, 2, 3):
            claimed_handoff(other_account, claimed_at=now - timedelta(hours=hours), lag=500)
        engineer = member(Membership.Role.ENGINEER, account=account)
    api_client.force_authenticate(engineer)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    # The API: the app role, one account.
    assert api_client.get(URL, {"period": "7d"}).json()["n_handoffs_claimed"] == 1
    assert account_ids_visible()["SessionHandoff"] == set()

    # The widget: every account, read on the alias, none of it on the app role's connection.
    with CaptureQueriesContext(connection) as on_default, CaptureQueriesContext(
        connections[CROSS_ACCOUNT_ALIAS]
    ) as on_alias:
        page = client.get(WIDGET_URL)
    assert page.status_code == 200 and page.context["cross_account_problem"] is None
    shown = claimed_7d(page.context["escalation_summary"])
    assert shown == {account.pk: 1, other_account.pk: 3}
    assert any("session_handoff" in query["sql"] for query in on_alias.captured_queries)
    assert not any("session_handoff" in query["sql"] for query in on_default.captured_queries)

    # The report and the app's admin pages, reads and writes.
    assert report_json() == {account.slug: 1, other_account.slug: 3}
    assert client.get("/admin/flowpilot_analytics/sessionhandoff/").context["cl"].result_count == 4
    membership = Membership.objects.using(CROSS_ACCOUNT_ALIAS).get(user=engineer)
    changed = client.post(
        f"/admin/flowpilot_analytics/membership/{membership.pk}/change/",
        {"user": engineer.pk, "account": account.pk, "role": Membership.Role.ADMIN},
    )
    assert changed.status_code == 302
    assert Membership.objects.using(CROSS_ACCOUNT_ALIAS).get(pk=membership.pk).role == Membership.Role.ADMIN


@pytest.mark.django_db(databases=["default", CROSS_ACCOUNT_ALIAS])
def test_inside_the_block_every_model_of_the_app_is_routed_to_the_alias(settings):
    use_cross_account_alias(settings)
    models = (Account, Membership, AiSession, SessionHandoff)
    with analytics_cross_account() as mode:
        inside = {(router.db_for_read(model), router.db_for_write(model)) for model in models}
    assert mode.aliases == (CROSS_ACCOUNT_ALIAS,)
    assert inside == {(CROSS_ACCOUNT_ALIAS, CROSS_ACCOUNT_ALIAS)}
    outside = {(router.db_for_read(model), router.db_for_write(model)) for model in models}
    assert outside == {("default", "default")}
    assert router.allow_migrate(CROSS_ACCOUNT_ALIAS, "flowpilot_analytics") is False


# --- The system checks ------------------------------------------------------------------


def app_messages(**kwargs):
    messages = run_checks(**kwargs)
    return {message.id: message for message in messages if message.id.startswith("flowpilot_analytics.")}


def test_check_warns_when_the_faces_would_read_as_the_app_role(become_app_role):
    become_app_role()
    warning = app_messages(databases=["default"])["flowpilot_analytics.W006"]
    assert "connects as flowpilot_app" in warning.msg


@pytest.mark.django_db(databases=["default", CROSS_ACCOUNT_ALIAS])
def test_check_is_silent_with_the_cross_account_alias(become_app_role, settings):
    use_cross_account_alias(settings)
    become_app_role()
    assert app_messages(databases=["default", CROSS_ACCOUNT_ALIAS]) == {}


@pytest.mark.parametrize(
    ("alias", "routers", "expected"),
    [
        ("no-such-alias", ["flowpilot_analytics.routers.AnalyticsReadRouter"], "flowpilot_analytics.E102"),
        (CROSS_ACCOUNT_ALIAS, [], "flowpilot_analytics.E103"),
        ("", ["flowpilot_analytics.routers.AnalyticsReadRouter"], "flowpilot_analytics.E015"),
    ],
)
def test_check_refuses_a_misconfigured_cross_account_alias(settings, alias, routers, expected):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "CROSS_ACCOUNT_DB_ALIAS": alias}
    settings.DATABASE_ROUTERS = routers
    assert expected in app_messages()
