"""The swappable models, the field map, the access policy and the indexes: what a host configures.

With the app's own models (a host with its own runs the core suite:
tests/settings_host_models.py). The system checks refuse a field map naming a
missing field or a field of the wrong kind, and models that cannot go together;
the access policy decides who reads what wherever access is decided; the index
check names what the probe and the window need.
"""

import ast
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flowpilot_analytics import selectors
from flowpilot_analytics.access import Role
from flowpilot_analytics.checks import check_metric_indexes
from flowpilot_analytics.factories import UserFactory
from flowpilot_analytics.field_map import HANDOFF_ALIASES, all_handoffs, field_map, metric_tables
from flowpilot_analytics.models import (
    Account,
    AiSession,
    AiSessionStep,
    SessionHandoff,
    get_account_model,
    get_handoff_model,
    get_session_model,
    get_step_model,
)
from flowpilot_analytics.selectors import handoff_rows, handoffs_in_window
from flowpilot_analytics.windows import custom_window
from tests.builders import BY_ENGINEER, URL, as_user, claimed_handoff

PACKAGE = Path(__file__).resolve().parent.parent / "flowpilot_analytics"


def app_errors(**kwargs):
    return [message for message in run_checks(**kwargs) if message.id.startswith("flowpilot_analytics.")]


def with_fields(settings, **fields):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "FIELDS": fields}


# --- The models in use ---------------------------------------------------------------------


def test_a_host_that_sets_nothing_runs_on_the_apps_models():
    assert (get_account_model(), get_session_model(), get_step_model(), get_handoff_model()) == (
        Account, AiSession, AiSessionStep, SessionHandoff
    )
    tables = metric_tables()
    assert (tables.step.name, tables.step.session, tables.step.created_at, tables.step.account) == (
        "ai_session_step", "session_id", "created_at", "account_id"
    )
    assert (tables.handoff.name, tables.handoff.claimed_at, tables.handoff.claimed_by) == (
        "session_handoff", "claimed_at", "claimed_by_id"
    )


def test_the_swappable_settings_always_have_a_value_as_auth_user_model_has(settings):
    assert settings.FLOWPILOT_ANALYTICS_ACCOUNT_MODEL == "flowpilot_analytics.Account"
    assert settings.FLOWPILOT_ANALYTICS_HANDOFF_MODEL == "flowpilot_analytics.SessionHandoff"
    assert AiSession._meta.swapped is None and SessionHandoff._meta.swapped is None


def test_naming_the_apps_own_models_explicitly_swaps_nothing(settings):
    settings.FLOWPILOT_ANALYTICS_HANDOFF_MODEL = "flowpilot_analytics.sessionhandoff"
    settings.FLOWPILOT_ANALYTICS_STEP_MODEL = "flowpilot_analytics.AiSessionStep"
    assert get_handoff_model() is SessionHandoff and get_session_model() is AiSession
    assert app_errors() == []


def test_steps_and_handoffs_are_swapped_together(settings):
    settings.FLOWPILOT_ANALYTICS_STEP_MODEL = "auth.Group"
    [error] = [message for message in app_errors() if message.id == "flowpilot_analytics.E104"]
    assert "FLOWPILOT_ANALYTICS_STEP_MODEL names a model of yours but FLOWPILOT_ANALYTICS_HANDOFF_MODEL" in error.msg


# --- The field map's check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"handoff.claimed_at": "taken_at"}, "handoff.claimed_at names 'taken_at', which is not a field of "
                                             "flowpilot_analytics.SessionHandoff"),
        ({"handoff.claimed_at": "session"}, "SessionHandoff.session, which must be a DateTimeField"),
        ({"step.created_at": "account"}, "AiSessionStep.account, which must be a DateTimeField"),
        ({"handoff.account": "created_at"}, "SessionHandoff.created_at, which must be a ForeignKey"),
        ({"handoff.claimed_by": "account"}, "SessionHandoff.account, which must be a ForeignKey to the user model"),
        ({"handoff.account": "claimed_by"}, "must be a ForeignKey to the account model in use"),
        ({"step.account": "session"}, "AiSessionStep.session, which must be a ForeignKey to the account model"),
        ({"step.session": "account"}, "must point at the same session model as FIELDS[\"handoff.session\"]"),
        ({"account.name": "id"}, "Account.id, which must be a text field"),
        ({"account.slug": "memberships"}, "'memberships', which is not a field"),
    ],
)
def test_a_field_map_naming_a_missing_field_or_a_field_of_the_wrong_kind_is_refused(settings, fields, message):
    with_fields(settings, **fields)
    errors = [error for error in app_errors() if error.id == "flowpilot_analytics.E105"]
    assert len(errors) == 1 and message in errors[0].msg, [error.msg for error in errors]
    assert errors[0].hint.startswith(f'Fix FLOWPILOT_ANALYTICS["FIELDS"][{list(fields)[0]!r}]')


def test_the_optional_fields_may_be_none(settings):
    with_fields(settings, **{"step.account": None, "account.slug": None})
    assert app_errors() == []
    assert (field_map().step_account, metric_tables().step.account) == (None, None)


def test_the_metrics_own_names_of_a_handoff_are_the_apps_columns():
    """With the app's models no column is renamed: the queries read the fields themselves."""
    assert set(HANDOFF_ALIASES) == {"id", "account_id", "session_id", "claimed_at", "claimed_by_id"}
    assert all_handoffs().query.annotations == {}


# --- No module reads a concrete model of the three ------------------------------------------------

# The app's own models are named only where they are the app's own by definition: their
# declaration, their admin pages, and the factories and demo data that build them.
MAY_NAME_THE_APPS_MODELS = {"models.py", "admin.py", "factories.py", "demo.py"}
SWAPPABLE = {"Account", "AiSession", "AiSessionStep", "SessionHandoff"}


def test_no_module_imports_a_swappable_model_class():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "migrations" or relative.name in MAY_NAME_THE_APPS_MODELS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").endswith("models"):
                continue
            ours = node.level > 0 or node.module.startswith("flowpilot_analytics")
            named = {alias.name for alias in node.names} & SWAPPABLE
            if ours and named:
                offenders.append(f"{relative}: {sorted(named)}")
    assert offenders == []


# --- The access policy -----------------------------------------------------------------------------

POLICY = {}


def dictated_roles(user):
    """A host's policy for these tests: whatever POLICY says of the user."""
    return POLICY.get(user.pk, {})


@pytest.fixture
def dictated(settings):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "ACCESS_POLICY": f"{__name__}.dictated_roles"}
    POLICY.clear()
    yield POLICY
    POLICY.clear()


@pytest.mark.django_db
def test_a_hosts_access_policy_decides_who_reads_which_account(dictated, api_client, account, other_account, now):
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=10)
    user = UserFactory()
    client = as_user(api_client, user)
    assert client.get(URL).status_code == 403  # no membership, and the policy gives nothing

    dictated[user.pk] = {account.pk: "engineer"}
    assert client.get(URL).json()["n_handoffs_claimed"] >= 0
    dictated[user.pk] = {account.pk: "viewer", str(other_account.pk): "admin"}  # keys may be strings
    assert client.get(URL).status_code == 400  # several accounts: name one
    assert client.get(URL, {"account": account.pk}).status_code == 403
    assert client.get(URL, {"account": other_account.pk}).status_code == 200
    dictated[user.pk] = {account.pk + 1000: "admin"}  # an account that does not exist
    assert client.get(URL).status_code == 404


@pytest.mark.django_db
def test_a_policy_answering_nonsense_grants_nothing_and_says_so(dictated, api_client, account, caplog):
    user = UserFactory()
    dictated[user.pk] = {account.pk: "owner", "acme": "admin", None: "admin", account.pk + 0.5: "admin"}
    assert as_user(api_client, user).get(URL).status_code == 403
    assert "the role 'owner'" in caplog.text and "'acme' that is not an integer id" in caplog.text


@pytest.mark.django_db
def test_a_named_claimer_is_a_member_when_the_policy_says_so(dictated, api_client, account, now):
    admin, colleague = UserFactory(), UserFactory(first_name="Quiet", last_name="Colleague")
    dictated[admin.pk] = {account.pk: "admin"}
    client = as_user(api_client, admin)
    assert client.get(BY_ENGINEER, {"claimed_by": colleague.pk}).json()["engineers"] == []

    dictated[colleague.pk] = {account.pk: "viewer"}
    [row] = client.get(BY_ENGINEER, {"claimed_by": colleague.pk}).json()["engineers"]
    assert (row["engineer_name"], row["n_handoffs_claimed"]) == ("Quiet Colleague", 0)


# --- Claimers are named by the user model ----------------------------------------------------------


@pytest.mark.django_db
def test_claimers_are_named_as_the_user_model_names_them(api_client, account, member, monkeypatch):
    from django.contrib.auth.models import User

    now = timezone.now()
    monkeypatch.setattr(User, "get_full_name", lambda user: f"Dr. {user.last_name}" if user.last_name else "")
    doctor, plain = UserFactory(last_name="Who"), UserFactory(username="plain")
    claimed_handoff(account, claimed_at=now - timedelta(hours=1), lag=5, claimed_by=doctor)
    claimed_handoff(account, claimed_at=now - timedelta(hours=2), lag=5, claimed_by=plain)
    client = as_user(api_client, member(Role.ADMIN))

    names = [row["engineer_name"] for row in client.get(BY_ENGINEER).json()["engineers"]]
    assert names == ["Dr. Who", "plain"]
    rows = client.get(URL + "/handoffs").json()["results"]
    assert {row["claimed_by_name"] for row in rows} == {"Dr. Who", "plain"}


@pytest.mark.django_db
def test_a_long_drill_down_names_its_claimers_batch_by_batch(account, now, monkeypatch):
    monkeypatch.setattr(selectors, "HANDOFF_ROWS_BATCH", 4)
    claimers = [UserFactory(username=f"claimer-{index}") for index in range(3)]
    for index in range(10):
        claimed_handoff(account, claimed_at=now - timedelta(hours=index + 1), lag=1,
                        claimed_by=claimers[0] if index < 8 else claimers[index - 7])
    handoffs = handoffs_in_window(account=account, window=custom_window(now - timedelta(days=1), now))

    with CaptureQueriesContext(connection) as queries:
        rows = list(handoff_rows(handoffs.order_by("-claimed_at")))

    assert [row["claimed_by_name"] for row in rows] == ["claimer-0"] * 8 + ["claimer-1", "claimer-2"]
    # The rows (a server-side cursor on PostgreSQL: one statement), then the names: three batches,
    # the second naming no one new.
    user_queries = [query for query in queries.captured_queries if "auth_user" in query["sql"]]
    assert len(user_queries) == 2


# --- The indexes ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_apps_tables_have_the_indexes_the_metric_needs():
    assert check_metric_indexes(databases=["default"]) == []
    out = io.StringIO()
    call_command("metric_indexes", stdout=out)
    assert out.getvalue() == "Every index the metric needs is there.\n"


@pytest.mark.django_db
def test_a_dropped_probe_index_is_named_with_its_statement():
    with connection.cursor() as cursor:  # inside the test's transaction: back after it
        cursor.execute("DROP INDEX step_account_session_created")
        cursor.execute("DROP INDEX step_session_created")

    [warning] = check_metric_indexes(databases=["default"])
    assert warning.id == "flowpilot_analytics.W007"
    assert "(account_id, session_id, created_at) or (session_id, created_at)" in warning.msg
    assert warning.hint.endswith(
        f'INDEX{" CONCURRENTLY" if connection.vendor == "postgresql" else ""} IF NOT EXISTS '
        '"ai_session_step_fp_probe" ON "ai_session_step" ("account_id", "session_id", "created_at");'
    )
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX only_the_session ON ai_session_step (session_id, created_at)")
    assert check_metric_indexes(databases=["default"]) == []  # enough for the probe
