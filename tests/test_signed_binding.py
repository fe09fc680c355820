"""The signed tenant binding (migration 0010): as the app role, no setting it can make shows another account.

Every test on PostgreSQL runs as the role the app serves as, after showing the
rows are there (as the test's superuser): see tests/test_rls.py. A forged binding
is made the way SQL running as the app role could (injected, or a bug):
``set_config`` of the ids, with the transaction's own token copied, with a token
made for another backend. A positive control in each shows that a token signed
with the key for this backend does open the account: the tests fail if the
policies stop reading the binding at all.
"""

import hashlib
import hmac

import psycopg
import pytest
from django.core.checks import Error, Warning
from django.core.management import call_command
from django.db import DatabaseError, OperationalError, ProgrammingError, connection, transaction

from flowpilot_analytics import rls
from flowpilot_analytics.checks import check_binding_key
from flowpilot_analytics.signed_binding import (
    BINDING_SETTING,
    BOUND_ACCOUNT_FUNCTION,
    BOUND_USER_FUNCTION,
    KEY_TABLE,
    backend_pid,
    binding_key,
    binding_token,
)
from tests.builders import account_ids_visible, nothing_visible, only_visible, set_config
from tests.model_sets import MODELS

pytestmark = [pytest.mark.django_db]
postgres_only = pytest.mark.postgres_only

URL = "/api/v1/analytics/flowpilot/escalations"
ROTATED = "a-rotated-binding-key-" + "x" * 20


def current_binding():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [BINDING_SETTING])
        return cursor.fetchone()[0]


def forge(account_id="", user_id="", token=None):
    """What SQL running as the app role can do: set the ids, and a token of its choosing."""
    values = {rls.ACCOUNT_SETTING: str(account_id), rls.USER_SETTING: str(user_id)}
    if token is not None:
        values[BINDING_SETTING] = token
    set_config(values)


def denied(statement, params=()):
    """Runs ``statement`` in a savepoint; the database error it raises (the test fails if none)."""
    with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
    return raised.value


@pytest.fixture
def another_backend(app_role):
    """The backend pid of another connection (logged in as the app role), open for the test."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or None, port=settings["PORT"] or None, dbname=settings["NAME"], user=app_role,
        password=settings["PASSWORD"] or None, autocommit=True,
    ) as other:
        yield other.info.backend_pid


# --- The database computes HMAC-SHA256 as Python does ---------------------------------------------


@postgres_only
@pytest.mark.core
@pytest.mark.parametrize("key_length", [1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("message", [b"", b"12:7:4242", "é:ü:—".encode(), b"x" * 300])
def test_the_sql_hmac_is_pythons(key_length, message):
    key = bytes((7 * index + 3) % 256 for index in range(key_length))
    with connection.cursor() as cursor:
        cursor.execute("SELECT flowpilot_analytics_hmac_sha256(%s, %s)", [key, message])
        [computed] = cursor.fetchone()
    assert bytes(computed) == hmac.new(key, message, hashlib.sha256).digest()


@postgres_only
@pytest.mark.core
def test_the_sql_hmac_gives_rfc_4231s_first_test_vector():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encode(flowpilot_analytics_hmac_sha256(%s, %s), 'hex')", [b"\x0b" * 20, b"Hi There"]
        )
        assert cursor.fetchone()[0] == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"


# --- Forged bindings show nothing, in every app tenant table --------------------------------------


@postgres_only
def test_the_apps_own_binding_shows_its_account_and_members(two_tenants, become_app_role, member):
    account, other_account = two_tenants
    user = member("engineer")
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_user(user, statement_timeout_ms=0)
        rls.bind_account(account)
        assert account_ids_visible() == only_visible(account)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {BOUND_ACCOUNT_FUNCTION}(), {BOUND_USER_FUNCTION}()")
            assert cursor.fetchone() == (account.pk, user.pk)


@postgres_only
def test_a_forged_account_id_shows_no_row_of_any_account(two_tenants, become_app_role):
    account, other_account = two_tenants
    assert account_ids_visible() == only_visible(account, other_account)  # as the owner: the rows are there
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        assert account_ids_visible() == only_visible(account)
        own_token = current_binding()

        # The other account's id alone: the token no longer matches, nothing is seen (not even its own).
        forge(account_id=other_account.pk)
        assert account_ids_visible() == nothing_visible()
        # With the transaction's own token copied beside it.
        forge(account_id=other_account.pk, token=own_token)
        assert account_ids_visible() == nothing_visible()
        # With the own account's id back, the copied token opens it again: the token is what is checked.
        forge(account_id=account.pk, token=own_token)
        assert account_ids_visible() == only_visible(account)


@postgres_only
def test_a_token_made_for_another_backend_shows_nothing(two_tenants, become_app_role, another_backend):
    account, other_account = two_tenants
    become_app_role()
    pid = backend_pid(connection)
    assert another_backend != pid

    forge(account_id=other_account.pk, token=binding_token(other_account.pk, "", another_backend))
    assert account_ids_visible() == nothing_visible()
    # The control: the same ids signed for this backend open the account, so the pid is what refused it.
    forge(account_id=other_account.pk, token=binding_token(other_account.pk, "", pid))
    assert account_ids_visible() == only_visible(other_account)


@postgres_only
def test_a_token_signed_with_another_key_shows_nothing(two_tenants, become_app_role):
    account, other_account = two_tenants
    become_app_role()
    guessed_key = hashlib.sha256(b"not the key").digest()
    forge(account_id=other_account.pk, token=binding_token(other_account.pk, "", backend_pid(connection),
                                                         key=guessed_key))
    assert account_ids_visible() == nothing_visible()


@postgres_only
def test_a_forged_user_id_shows_none_of_that_users_memberships(two_tenants, become_app_role, member):
    account, other_account = two_tenants
    user = member("engineer")
    other_user = member("admin", account=other_account)
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_user(user, statement_timeout_ms=0)
        assert account_ids_visible()["grant"] == {account.pk}  # the user's own membership
        own_token = current_binding()
        for token in (None, own_token):
            forge(user_id=other_user.pk, token=token)
            assert account_ids_visible()["grant"] == set()


@postgres_only
def test_a_forged_binding_cannot_write_into_another_account(two_tenants, become_app_role):
    account, other_account = two_tenants
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        forge(account_id=other_account.pk, token=current_binding())
        error = denied(
            "INSERT INTO ai_session (account_id, created_at) VALUES (%s, now())", [other_account.pk]
        )
        assert "row-level security" in str(error)


# --- The key and the functions are out of the app role's reach -----------------------------------


@postgres_only
@pytest.mark.core
def test_the_key_table_is_unreadable_and_unwritable_by_the_app_role(become_app_role):
    become_app_role()
    for statement in (f"SELECT key FROM {KEY_TABLE}", f"INSERT INTO {KEY_TABLE} (key) VALUES ('\\x00')",
                      f"DELETE FROM {KEY_TABLE}"):
        assert isinstance(denied(statement), ProgrammingError), statement
        assert "permission denied" in str(denied(statement)), statement


@postgres_only
@pytest.mark.core
def test_the_app_role_cannot_replace_or_shadow_the_functions(two_tenants, become_app_role):
    account, other_account = two_tenants
    become_app_role()
    for statement in (
        f"CREATE OR REPLACE FUNCTION public.{BOUND_ACCOUNT_FUNCTION}() RETURNS bigint LANGUAGE sql AS "
        f"'SELECT {other_account.pk}::bigint'",
        f"ALTER FUNCTION {BOUND_ACCOUNT_FUNCTION}() SECURITY INVOKER",
        f"DROP FUNCTION {BOUND_ACCOUNT_FUNCTION}()",
        "CREATE OR REPLACE FUNCTION public.flowpilot_analytics_hmac_sha256(bytea, bytea) RETURNS bytea "
        "LANGUAGE sql AS 'SELECT ''\\x''::bytea'",
    ):
        message = str(denied(statement))
        assert "must be owner" in message or "permission denied" in message, statement
    # A function of the same name earlier on the search path: the policies name the owner's by its oid.
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE FUNCTION pg_temp.{BOUND_ACCOUNT_FUNCTION}() RETURNS bigint LANGUAGE sql AS "
            f"'SELECT {other_account.pk}::bigint'"
        )
        cursor.execute("SET LOCAL search_path = pg_temp, public")
    forge(account_id=other_account.pk)
    assert MODELS.visible_accounts() == nothing_visible()


@postgres_only
def test_the_cross_account_role_still_reads_every_account_with_no_binding(
    two_tenants, become_cross_account_role
):
    account, other_account = two_tenants
    become_cross_account_role()
    assert account_ids_visible() == only_visible(account, other_account)


# --- No query added: the token goes in the binding's own statement --------------------------------


@postgres_only
@pytest.mark.core
def test_binding_costs_one_statement_as_before(
    two_tenants, become_app_role, member, django_assert_num_queries
):
    account, _ = two_tenants
    user = member("engineer")
    become_app_role()
    with rls.tenant_transaction():
        with django_assert_num_queries(1):
            rls.bind_user(user, statement_timeout_ms=0)
        with django_assert_num_queries(1):
            rls.bind_account(account)
        with django_assert_num_queries(1):
            rls.unbind_account()


# --- The key: stored by the owner, checked, rotated -----------------------------------------------


@pytest.mark.core
def test_the_check_is_silent_when_the_database_accepts_the_key_and_on_sqlite():
    assert check_binding_key(None, databases=["default"]) == []


@postgres_only
@pytest.mark.core
def test_the_check_is_an_error_when_the_database_does_not_hold_the_key(settings, django_assert_num_queries):
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "BINDING_KEY": ROTATED}
    # Three statements, in a savepoint here (its start, its rollback and release: 3 more).
    with django_assert_num_queries(6):
        [error] = check_binding_key(None, databases=["default"])
    assert isinstance(error, Error) and error.id == "flowpilot_analytics.E061"
    assert "store_binding_key" in error.hint
    call_command("store_binding_key", stdout=open("/dev/null", "w"))
    assert check_binding_key(None, databases=["default"]) == []


@postgres_only
@pytest.mark.core
def test_the_check_warns_when_the_database_cannot_be_asked(monkeypatch):
    def unreachable(connection):
        raise OperationalError("connection refused")

    monkeypatch.setattr("flowpilot_analytics.signed_binding.key_is_accepted", unreachable)
    [warning] = check_binding_key(None, databases=["default"])
    assert isinstance(warning, Warning) and warning.id == "flowpilot_analytics.W060"


@postgres_only
def test_rotating_the_key_fails_closed_until_it_is_stored_then_the_old_one_is_pruned(
    api_client, settings, two_tenants, member, become_app_role, capsys
):
    account, _ = two_tenants
    engineer = member("engineer")
    api_client.force_authenticate(engineer)

    def figures_as_app_role():
        with transaction.atomic():
            become_app_role()
            response = api_client.get(URL, {"period": "7d"})
            transaction.set_rollback(True)
        return response.status_code, response.json().get("n_handoffs_claimed")

    old_key = binding_key()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {KEY_TABLE} WHERE key = %s", [old_key])
        assert cursor.fetchone() == (1,)  # stored by the migration

    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "BINDING_KEY": ROTATED}
    assert binding_key() != old_key
    # Fails closed until the key is stored: not even the user's own membership is seen (403).
    assert figures_as_app_role() == (403, None)
    call_command("store_binding_key")
    assert "Stored the binding key." in capsys.readouterr().out
    assert figures_as_app_role() == (200, 2)

    # Until pruned, the old key (processes not yet restarted) is still accepted; then it is not.
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "BINDING_KEY": None}
    assert binding_key() == old_key
    assert figures_as_app_role() == (200, 2)
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "BINDING_KEY": ROTATED}
    call_command("store_binding_key", "--prune")
    assert "Dropped 1 other key." in capsys.readouterr().out
    settings.FLOWPILOT_ANALYTICS = {**settings.FLOWPILOT_ANALYTICS, "BINDING_KEY": None}
    assert figures_as_app_role() == (403, None)
    [error] = check_binding_key(None, databases=["default"])
    assert error.id == "flowpilot_analytics.E061"


def visible_in_later_tables():
    """The account ids each later app table (business hours 0008, first-action index 0009) shows."""
    from flowpilot_analytics.models import BusinessCalendar, BusinessInterval, ClosedDate, FirstActionIndex

    return {
        "calendars": set(BusinessCalendar.objects.values_list("account_id", flat=True)),
        "intervals": set(BusinessInterval.objects.values_list("calendar__account_id", flat=True)),
        "closed dates": set(ClosedDate.objects.values_list("calendar__account_id", flat=True)),
        "first actions": set(FirstActionIndex.objects.values_list("account_id", flat=True)),
    }


@postgres_only
@pytest.mark.core
def test_a_forged_binding_shows_no_calendar_and_no_first_action_of_another_account(two_tenants, become_app_role):
    import datetime

    from django.utils import timezone

    from flowpilot_analytics.models import BusinessCalendar, BusinessInterval, ClosedDate, FirstActionIndex

    account, other_account = two_tenants
    for number, tenant in enumerate(two_tenants, start=1):
        calendar = BusinessCalendar.objects.create(account_id=tenant.pk, time_zone="Europe/Paris")
        BusinessInterval.objects.create(
            calendar=calendar, weekday=0, opens=datetime.time(9), closes=datetime.time(18)
        )
        ClosedDate.objects.create(calendar=calendar, date=datetime.date(2026, 12, 25))
        FirstActionIndex.objects.create(
            id=10_000_000 + number, account_id=tenant.pk, session_id=number, claimed_at=timezone.now()
        )
    both = {account.pk, other_account.pk}
    assert visible_in_later_tables() == dict.fromkeys(visible_in_later_tables(), both)  # as the owner
    become_app_role()
    with rls.tenant_transaction():
        rls.bind_account(account)
        assert visible_in_later_tables() == dict.fromkeys(visible_in_later_tables(), {account.pk})
        own_token = current_binding()
        forge(account_id=other_account.pk)
        assert visible_in_later_tables() == dict.fromkeys(visible_in_later_tables(), set())
        forge(account_id=other_account.pk, token=own_token)
        assert visible_in_later_tables() == dict.fromkeys(visible_in_later_tables(), set())
